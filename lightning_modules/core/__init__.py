"""What every method's science shares: errors, loss checks, the metrics history, metrics, pictures.

Kept free of imports so that reading params never pays for importing torch."""
