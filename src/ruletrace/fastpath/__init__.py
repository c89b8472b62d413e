"""Fast paths: code that does what a reference version does, faster, proven equal by a test.

README.md in this folder lists each fast path, its reference version and the test that proves
them equal. The pipeline (``pipeline.Run.summary``) is the one place that picks a fast path.
"""
