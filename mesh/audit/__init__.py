"""The audit log: the hash chain's pure logic, its verification, and reading it back."""
