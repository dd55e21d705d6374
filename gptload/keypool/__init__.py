"""The key pool's pure core: error classification, the key state machine and rotation.

See README.md in this folder for the rule that keeps it pure.
"""
