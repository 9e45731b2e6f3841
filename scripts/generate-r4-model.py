#!/usr/bin/env python3
"""Generates src/fhir/r4-model.json, the compact R4 element model the structure checker embeds,
from the official StructureDefinitions (profiles-resources.json and profiles-types.json).

For every resource, complex datatype and backbone element it lists each element:
name -> [min, max ("1" or "*"), [type codes], isSummary (1 or 0)]. Choice elements keep their `[x]` name; backbone
elements get a type named by their path (e.g. "Patient.contact").

Usage: scripts/generate-r4-model.py DEFINITIONS_DIR > src/fhir/r4-model.json
"""
import json
import sys

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"


def type_code(t):
    code = t["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in t.get("extension", []):
            if ext.get("url") == FHIR_TYPE_EXT:
                return ext.get("valueUrl") or ext.get("valueUri")
        return {"String": "string", "Boolean": "boolean", "Integer": "integer", "Decimal": "decimal",
                "Date": "date", "DateTime": "dateTime", "Time": "time"}.get(code.split(".")[-1], "string")
    return code


def main():
    base = sys.argv[1]
    model = {}
    primitives = []
    for name in ("profiles-types.json", "profiles-resources.json"):
        bundle = json.load(open(f"{base}/{name}"))
        for entry in bundle["entry"]:
            sd = entry["resource"]
            if sd.get("resourceType") != "StructureDefinition" or sd.get("derivation") == "constraint":
                continue
            kind = sd["kind"]
            if kind == "primitive-type":
                primitives.append(sd["type"])
                continue
            if kind not in ("complex-type", "resource") or sd["type"] in ("Element", "BackboneElement"):
                continue
            if sd.get("abstract") and sd["type"] not in ("Resource", "DomainResource"):
                continue
            elements = sd["snapshot"]["element"]
            root = elements[0]["path"]
            types = {root: {}}
            for el in elements[1:]:
                path = el["path"]
                parent, _, name = path.rpartition(".")
                if parent not in types:
                    continue  # children of a slice or an element we skipped
                if "contentReference" in el:
                    codes = [el["contentReference"].lstrip("#")]
                else:
                    codes = [type_code(t) for t in el.get("type", [])]
                    if codes in (["BackboneElement"], ["Element"]):
                        types[path] = {}
                        codes = [path]
                if name == "id" and parent == root and kind == "resource":
                    codes = ["id"]  # the snapshot says System.String; the logical id is an `id`
                maximum = "*" if el["max"] == "*" else "1"
                types[parent][name] = [el["min"], maximum, codes, 1 if el.get("isSummary") else 0]
            for path, els in types.items():
                model[path] = {"resource": kind == "resource" and path == root, "elements": els}
    json.dump({"primitives": sorted(primitives), "types": model}, sys.stdout, separators=(",", ":"), sort_keys=True)


main()
