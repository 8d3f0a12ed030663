"""SQLite stores. Each table has one owning module here, the only place its name appears in SQL (reads
included); tests/architecture/test_one_owner_per_table.py holds the map and checks it."""
