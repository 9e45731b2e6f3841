DROP TABLE attribution;
