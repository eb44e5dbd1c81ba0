"""The reserve exchange's rules: pure Python, no I/O."""
