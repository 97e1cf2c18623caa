"""What the tests need and the notebook does not: reference models, checkpoint makers, kernel
code."""
