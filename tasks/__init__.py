"""subjectlab stages: tasks/core is the runtime they share, tasks/<method>/ one module per stage."""
