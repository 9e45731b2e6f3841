-- Resources of one type in key order: searches whose only condition matches most of a type
-- walk this in order and stop after one page.
CREATE INDEX resources_by_type_pk ON resources (resource_type, pk);
