#!/usr/bin/env python3
"""Multiplies a data set loaded through the API, on SQLite, for measure benchmarks.

Each Patient, Observation and Task (current versions) is copied COPIES - 1 times with the id
suffix `x{k}`, together with its search index rows and, for Patients, its attribution rows;
references to Patients are re-pointed to the copy of the same number. The index rows are copies
of what the server extracted, so the measure queries see exactly the shapes real writes make.
The copies' JSON content and history still name the originals (the measures never read them).
Run it with the server stopped.

usage: bench/replicate_sqlite.py DATABASE_FILE COPIES
"""

import sqlite3
import sys
import time

path, copies = sys.argv[1], int(sys.argv[2])
db = sqlite3.connect(path)
started = time.time()
TYPES = "('Patient', 'Observation', 'Task')"
originals = db.execute(f"SELECT COUNT(*) FROM resources WHERE resource_type IN {TYPES} AND deleted = 0").fetchone()[0]
for k in range(1, copies):
    suffix = f"x{k}"
    db.execute("CREATE TEMP TABLE IF NOT EXISTS pairs (old_pk INTEGER PRIMARY KEY, new_pk INTEGER)")
    db.execute("DELETE FROM pairs")
    db.execute(f"""INSERT INTO resources (resource_type, id, version_id, last_updated, deleted, content)
                   SELECT resource_type, id || ?, version_id, last_updated, deleted, content FROM resources
                   WHERE resource_type IN {TYPES} AND deleted = 0 AND id NOT LIKE '%x%'""", (suffix,))
    db.execute(f"""INSERT INTO pairs SELECT o.pk, n.pk FROM resources o JOIN resources n
                   ON n.resource_type = o.resource_type AND n.id = o.id || ?
                   WHERE o.resource_type IN {TYPES} AND o.deleted = 0 AND o.id NOT LIKE '%x%'""", (suffix,))
    for table, columns in [("search_string", "param, normalized, exact"),
                           ("search_token", "param, system, code, text"),
                           ("search_date", "param, start_at, end_at"),
                           ("search_quantity", "param, low, high, system, code"),
                           ("search_uri", "param, uri")]:
        db.execute(f"INSERT INTO {table} (resource_pk, {columns}) SELECT p.new_pk, {columns} "
                   f"FROM {table} t JOIN pairs p ON p.old_pk = t.resource_pk")
    db.execute("""INSERT INTO search_reference (resource_pk, param, target_type, target_id, url)
                  SELECT p.new_pk, t.param, t.target_type,
                         CASE WHEN t.target_type = 'Patient' THEN t.target_id || ? ELSE t.target_id END, t.url
                  FROM search_reference t JOIN pairs p ON p.old_pk = t.resource_pk""", (suffix,))
    db.execute("""INSERT INTO attribution (patient_id, entity, region, period_start, period_end)
                  SELECT patient_id || ?, entity, region, period_start, period_end FROM attribution
                  WHERE patient_id NOT LIKE '%x%'""", (suffix,))
    db.commit()
    print(f"copy {k}: done at {time.time() - started:.0f} s", flush=True)
total = db.execute(f"SELECT resource_type, COUNT(*) FROM resources WHERE resource_type IN {TYPES} GROUP BY 1").fetchall()
print(f"{originals} resources copied {copies - 1} times in {time.time() - started:.0f} s: {total}")
db.commit()
