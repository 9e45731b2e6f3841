DROP TABLE used_assertions;
DROP TABLE clients;
