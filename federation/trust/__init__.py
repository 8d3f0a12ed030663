"""Trust rotation, cosigning and witnessing (I/O shells around ``core.trustfile``)."""
