"""`tokensmith operator` and `tokensmith crd`."""

from tokensmith.core.errors import placeholder_command

operator = placeholder_command("operator", "Run the Kubernetes operator.")
crd = placeholder_command("crd", "Print the LLMTrainingJob CustomResourceDefinition.")
