#!/usr/bin/env python3
"""Generates src/validation/r4-definitions.json, what the validator needs of the official R4
definitions beyond the element model (src/fhir/r4-model.json):

- constraints: type or backbone path -> [[key, severity, human, expression], ...] (ele-1 is left
  out: the structure check and the validator's walk enforce it for every element);
- bindings: type or backbone path -> JSON key -> [strength, value set URL] for required bindings
  (choice elements get one entry per variant key);
- targets: type or backbone path -> JSON key -> [target resource types] of Reference elements
  that do not accept every resource;
- valueSets: URL -> [[system, code], ...], the expansion of every required-bound value set that
  can be expanded from the code systems of the specification (value sets drawing on external
  code systems such as UCUM or BCP-47 are left out and not checked).

Usage: scripts/generate-r4-definitions.py DEFINITIONS_DIR > src/validation/r4-definitions.json
"""
import json
import sys

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"


def cap(code):
    return code[:1].upper() + code[1:]


def type_code(t):
    code = t["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in t.get("extension", []):
            if ext.get("url") == FHIR_TYPE_EXT:
                return ext.get("valueUrl") or ext.get("valueUri")
        return "string"
    return code


def main():
    base = sys.argv[1]
    constraints, bindings, targets, needed = {}, {}, {}, set()
    for name in ("profiles-types.json", "profiles-resources.json"):
        for entry in json.load(open(f"{base}/{name}"))["entry"]:
            sd = entry["resource"]
            if sd.get("resourceType") != "StructureDefinition" or sd.get("derivation") == "constraint":
                continue
            if sd["kind"] not in ("complex-type", "resource") or sd["type"] in ("Element", "BackboneElement"):
                continue
            for el in sd["snapshot"]["element"]:
                path = el["path"]
                own = [[c["key"], c["severity"], c.get("human", ""), c["expression"]]
                       for c in el.get("constraint", [])
                       if c["key"] != "ele-1" and "expression" in c]
                # An element of a datatype repeats its type's constraints (ext-1 on every
                # extension): those are applied by type, so only roots and backbones keep theirs.
                codes = [t["code"] for t in el.get("type", [])]
                for c in own:
                    # R4's que-7 reads `answer is Boolean`, which never holds for a FHIR boolean
                    # under FHIRPath's type rules (System.Boolean); R5 corrected it.
                    if c[0] == "que-7":
                        c[3] = c[3].replace("answer is Boolean", "answer is boolean")
                    # R4 applies as() to collections (dom-3: descendants().as(canonical)), which
                    # FHIRPath defines for single items only; ofType() is the filter meant.
                    c[3] = c[3].replace(".as(", ".ofType(")
                    # The *-0 name rules repeat a class 254 times, past the evaluator's regex size
                    # limit; the same rule, checked as a full match with a length test.
                    c[3] = c[3].replace("name.matches('[A-Z]([A-Za-z0-9_]){0,254}')",
                                        "name.matches('^[A-Z][A-Za-z0-9_]*$') and name.length() <= 255")
                if own and ("." not in path or codes in (["BackboneElement"], ["Element"])):
                    constraints.setdefault(path, []).extend(own)
                if "." not in path:
                    continue
                parent, _, elname = path.rpartition(".")
                types = el.get("type", [])
                keys = []
                if elname.endswith("[x]"):
                    keys = [(elname[:-3] + cap(type_code(t)), t) for t in types]
                else:
                    keys = [(elname, t) for t in types[:1]]
                b = el.get("binding")
                if b and b.get("strength") == "required" and b.get("valueSet"):
                    vs = b["valueSet"].split("|")[0]
                    for key, t in keys:
                        if type_code(t) in ("code", "Coding", "CodeableConcept"):
                            bindings.setdefault(parent, {})[key] = vs
                            needed.add(vs)
                for key, t in keys:
                    if type_code(t) != "Reference":
                        continue
                    profiles = t.get("targetProfile", [])
                    names = [p.rsplit("/", 1)[-1] for p in profiles]
                    if names and "Resource" not in names:
                        targets.setdefault(parent, {})[key] = names
    systems, sets = {}, {}
    for entry in json.load(open(f"{base}/valuesets.json"))["entry"] + json.load(open(f"{base}/v3-codesystems.json"))["entry"]:
        r = entry["resource"]
        if r["resourceType"] == "CodeSystem" and r.get("content") == "complete":
            codes = []

            def walk(concepts):
                for c in concepts:
                    codes.append(c["code"])
                    walk(c.get("concept", []))
            walk(r.get("concept", []))
            systems[r["url"]] = codes
        elif r["resourceType"] == "ValueSet":
            sets[r["url"]] = r

    def expand(url, depth=0):
        vs = sets.get(url)
        if vs is None or depth > 5:
            return None
        out = []
        for inc in vs.get("compose", {}).get("include", []):
            if inc.get("filter"):
                return None
            part = None
            if "system" in inc:
                if inc.get("concept"):
                    part = [(inc["system"], c["code"]) for c in inc["concept"]]
                elif inc["system"] in systems:
                    part = [(inc["system"], c) for c in systems[inc["system"]]]
                else:
                    return None
            for ref in inc.get("valueSet", []):
                sub = expand(ref.split("|")[0], depth + 1)
                if sub is None:
                    return None
                part = [p for p in (part if part is not None else sub) if p in sub] if part is not None else sub
            if part is None:
                return None
            out.extend(part)
        if vs.get("compose", {}).get("exclude"):
            return None
        return out or None

    value_sets = {}
    for url in sorted(needed):
        expansion = expand(url)
        if expansion:
            value_sets[url] = sorted(set(expansion))
    bindings = {p: {k: v for k, v in b.items() if v in value_sets} for p, b in bindings.items()}
    bindings = {p: b for p, b in bindings.items() if b}
    json.dump({"constraints": constraints, "bindings": bindings, "targets": targets, "valueSets": value_sets},
              sys.stdout, separators=(",", ":"), sort_keys=True)


main()
