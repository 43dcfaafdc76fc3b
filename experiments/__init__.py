"""telemetry-bench experiments: matrices of pipeline configurations, the runner, and what it measures."""
