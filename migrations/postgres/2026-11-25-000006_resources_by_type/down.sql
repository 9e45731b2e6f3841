DROP INDEX resources_by_type_pk;
