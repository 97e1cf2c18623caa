"""What the tests need and the notebook does not: reference models, the parity runs, and the
code that reads the notebook's kernel (what benchmarks and generators share lives in
testbeds/)."""
