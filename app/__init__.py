"""cnfs-api: the backend of the Conseillers numériques France Services programme."""
