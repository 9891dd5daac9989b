"""The trainer: time split, scoring against naive references and the promotion gate."""
