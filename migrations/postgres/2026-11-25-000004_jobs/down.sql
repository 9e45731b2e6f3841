DROP TABLE server_state;
DROP TABLE jobs;
