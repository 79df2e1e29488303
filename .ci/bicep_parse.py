"""Offline syntax and shape checks for the deployment code, run by .ci/infra-check.

Why: the Bicep compiler is not installable here (it is a downloaded binary), and checkov only
*logs* a Bicep parse error and moves on, so a broken file would pass the policy scan unseen.
This script parses every file with pycep (the parser checkov itself uses) and fails loudly.

Usage:
  bicep_parse.py FILE.bicep...          parse each file; exit 1 naming every file that fails
  bicep_parse.py --self-test            prove the parser rejects a broken file (exit 1 if not)
  bicep_parse.py --check-azd azure.yaml --check-json DIR
                                        azure.yaml has the keys azd needs; every *.json under
                                        DIR is valid JSON
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import yaml
from pycep import BicepParser

# A module call with a missing closing brace: the kind of slip a reviewer misses in a diff.
BROKEN_BICEP = """targetScope = 'subscription'
module identity 'modules/identity.bicep' = {
  name: 'identity'
  params: {
    name: 'x'
}
"""

VALID_BICEP = """param name string
resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: 'westeurope'
}
"""


def parse_errors(paths: list[Path]) -> list[str]:
    """Returns one message per file that does not parse, empty when all do."""
    parser = BicepParser()
    errors = []
    for path in paths:
        try:
            parser.parse(file_path=path)
        except Exception as err:  # lark raises several unrelated types; all mean "invalid"
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            errors.append(f"{path}: {first_line}")
    return errors


def self_test() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        broken = Path(tmp) / "broken.bicep"
        broken.write_text(BROKEN_BICEP)
        valid = Path(tmp) / "valid.bicep"
        valid.write_text(VALID_BICEP)
        if parse_errors([valid]):
            print("self-test: a valid file was rejected", file=sys.stderr)
            return 1
        if not parse_errors([broken]):
            print("self-test: a broken file was accepted; the parse step would prove nothing", file=sys.stderr)
            return 1
    print("self-test: broken Bicep is rejected, valid Bicep is accepted")
    return 0


def check_azd(path: Path) -> list[str]:
    """The keys `azd up` relies on: infra path, one function service with a packaging hook."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        return [f"{path}: {err}"]
    if not isinstance(doc, dict):
        return [f"{path}: top level must be a mapping"]
    errors = []
    if not isinstance(doc.get("name"), str):
        errors.append(f"{path}: missing name")
    infra = doc.get("infra") or {}
    if infra.get("provider", "bicep") != "bicep":
        errors.append(f"{path}: infra.provider must be bicep")
    infra_dir = path.parent / infra.get("path", "infra")
    module = infra.get("module", "main")
    if not (infra_dir / f"{module}.bicep").is_file():
        errors.append(f"{path}: infra module {infra_dir / module}.bicep not found")
    services = doc.get("services")
    if not isinstance(services, dict) or not services:
        return errors + [f"{path}: no services"]
    for name, svc in services.items():
        if not isinstance(svc, dict):
            errors.append(f"{path}: services.{name} must be a mapping")
            continue
        for key in ("project", "language", "host", "dist"):
            if not isinstance(svc.get(key), str):
                errors.append(f"{path}: services.{name}.{key} missing")
        if svc.get("host") != "function":
            errors.append(f"{path}: services.{name}.host must be function")
        hooks = svc.get("hooks") or {}
        if "prepackage" not in hooks:
            errors.append(f"{path}: services.{name}.hooks.prepackage missing (nothing would build the binary)")
    return errors


def check_json(directory: Path) -> list[str]:
    errors = []
    for path in sorted(directory.rglob("*.json")):
        try:
            json.loads(path.read_text())
        except (OSError, ValueError) as err:
            errors.append(f"{path}: {err}")
    return errors


def main(argv: list[str]) -> int:
    if argv == ["--self-test"]:
        return self_test()
    if argv and argv[0] == "--check-azd":
        if len(argv) != 4 or argv[2] != "--check-json":
            print(__doc__, file=sys.stderr)
            return 2
        errors = check_azd(Path(argv[1])) + check_json(Path(argv[3]))
        label = "azure.yaml and JSON files"
    else:
        if not argv:
            print(__doc__, file=sys.stderr)
            return 2
        errors = parse_errors([Path(a) for a in argv])
        label = f"{len(argv)} Bicep files"
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    if errors:
        return 1
    print(f"ok: {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
