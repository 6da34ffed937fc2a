"""The stored golden of the toy twin: exact inputs, their logits and routing (see store.py, make_golden.py)."""
