"""The only place that imports Ray Train and Ray Tune.

worker.py runs a backend loop inside a Train worker; trainer.py turns a spec into a Trainer and runs it;
cluster.py connects to (or starts) Ray; remote.py runs one-off backend work as Ray tasks.
"""
