"""What the daemon tells people: alerts, metrics, the webhook and the operator's page (its own bounded process)."""
