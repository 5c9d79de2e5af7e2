"""The simulated phone network and its virtual residents, for the demo and the tests; production code never
imports it (the ``sanlv`` script registers it as the ``simulator`` provider).

- ``store``: the network's memory in Redis (calls, transcripts), in the deployment's namespace.
- ``residents``: who answers and what they press (scripts stored by tests, or a village population).
- ``call``: one call, run as Twilio would (status callbacks, the TwiML conversation, signed requests).
- ``network``: the telephony provider and the RQ job that runs each call.
- ``demo`` and ``cli``: ``sanlv demo``.
"""
