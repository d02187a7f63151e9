"""Running the service: health, database migrations, serving, and the audit log's pages."""
