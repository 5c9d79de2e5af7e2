"""Test support: doubles of the outer seams (Twilio's REST API), shared by tests and benchmarks."""
