#!/usr/bin/env python3
"""Generates src/terminology/r4-hierarchies.json: the subsumption hierarchy of every code system of
the specification that has one (FHIR-defined and HL7 v3 code systems), for token `:above` /
`:below` search. Nested `concept`s and the `parent` / `subsumedBy` concept properties both count.

Output: code system URL -> [[code, parent code], ...].

Usage: scripts/generate-r4-hierarchies.py DEFINITIONS_DIR > src/terminology/r4-hierarchies.json
"""
import json
import sys


def pairs_of(code_system):
    pairs = []

    def walk(concepts, parent):
        for concept in concepts:
            code = concept.get("code")
            if code is None:
                continue
            if parent is not None:
                pairs.append([code, parent])
            for prop in concept.get("property", []):
                if prop.get("code") in ("parent", "subsumedBy") and "valueCode" in prop:
                    pairs.append([code, prop["valueCode"]])
            walk(concept.get("concept", []), code)

    walk(code_system.get("concept", []), None)
    # keep each pair once, in a stable order
    return sorted({tuple(p) for p in pairs})


def main():
    base = sys.argv[1]
    hierarchies = {}
    for name in ("valuesets.json", "v3-codesystems.json"):
        bundle = json.load(open(f"{base}/{name}"))
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if resource.get("resourceType") != "CodeSystem":
                continue
            pairs = pairs_of(resource)
            if pairs:
                hierarchies[resource["url"]] = [list(p) for p in pairs]
    json.dump(hierarchies, sys.stdout, separators=(",", ":"), sort_keys=True)


main()
