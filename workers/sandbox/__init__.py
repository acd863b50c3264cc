"""The provider sandbox: plays providers when no keys are set (their webhooks now, their APIs later)."""
