"""The kernel lab: network-namespace test hosts, real TRACE captures, observed outcomes (see README.md)."""
