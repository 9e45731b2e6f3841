#!/usr/bin/env python3
"""Generates src/search/r4-search-parameters.json (the official R4 SearchParameters, reduced to what
the search engine uses) and src/search/patient-compartment.json (the Patient compartment), from the
official definition files.

Usage: scripts/generate-search-parameters.py DEFINITIONS_DIR
"""
import json
import sys

base = sys.argv[1]
bundle = json.load(open(f"{base}/search-parameters.json"))
params = []
for entry in bundle["entry"]:
    sp = entry["resource"]
    if sp.get("resourceType") != "SearchParameter":
        continue
    out = {"url": sp["url"], "code": sp["code"], "base": sp["base"], "type": sp["type"]}
    if sp.get("expression"):
        out["expression"] = sp["expression"]
    if sp.get("target"):
        out["target"] = sp["target"]
    if sp.get("component"):
        out["component"] = [{"definition": c["definition"], "expression": c["expression"]} for c in sp["component"]]
    params.append(out)
json.dump(params, open("src/search/r4-search-parameters.json", "w"), separators=(",", ":"))

compartment = json.load(open(f"{base}/compartmentdefinition-patient.json"))
members = {r["code"]: r["param"] for r in compartment["resource"] if r.get("param")}
json.dump(members, open("src/search/patient-compartment.json", "w"), separators=(",", ":"), sort_keys=True)
print(f"{len(params)} search parameters, {len(members)} compartment member types")
