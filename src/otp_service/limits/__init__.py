"""Request rates per client (sliding logs) and the service-wide send-rate bucket."""
