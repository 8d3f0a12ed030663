"""SQLite stores. Each table has one owning module here, the only place its name appears in SQL (reads
included); tests/test_architecture_tables.py holds the map and checks it."""
