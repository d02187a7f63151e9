"""The outsider probe of issue 16 and its test."""
