"""HOW a task becomes Prefect objects: the work pool and its queues, schedules,
deployments (tags, description, parameters) and the reverse mapping from a
deployment and its flow runs back to the spec's BackgroundTask."""
