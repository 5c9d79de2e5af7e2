"""The testing package that the suite (``tests/``) and the benchmarks (``bench/``) share: doubles of the outer
seams (the Twilio stand-in), a redis-server of a run's own, free loopback ports, real worker processes.

It imports the project's packages and third-party libraries, never a test module (``tests.*`` outside this
package), so a benchmark can import it without collecting tests. Importing it needs the repository root on
``sys.path``: pytest puts it there (``tests`` is a package), and ``bench/_common.py`` does for the benchmarks.
"""
