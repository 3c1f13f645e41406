"""WHAT STARTS runs: the trigger daemon, its sensors and constraint evaluation.

Not built yet (issues "The trigger daemon" and "Constraints"). Until then
constraints are stored with a task and shown, but not enforced, and tasks of
type ``triggered`` are refused with a clear error.
"""
