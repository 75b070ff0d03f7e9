"""What to render: prompt files, the scheduler registry (and each family's defaults), flow-matching solver
adapters, and the plan (config -> RenderJobs with content keys)."""
