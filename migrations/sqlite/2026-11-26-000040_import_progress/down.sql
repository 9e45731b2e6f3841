DROP TABLE import_failures;
DROP TABLE import_files;
