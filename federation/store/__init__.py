"""SQLite stores. Each table has one owning module, whose methods are its only writers."""
