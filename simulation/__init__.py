"""`intelrouter simulate`: weeks of real-data traffic through the real loop, on a simulated clock.

An application of the library like `serving/` and `flows/` (it drives the serving runtime, triage, review, the
training job, the gate and the canary check); the `intelrouter simulate` command runs it.
"""
