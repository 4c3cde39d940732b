"""Versioned prompt templates: shipped as package data, overridable from a user folder.

A template file `NAME.vN.txt` has `# key: value` header lines (name, version), then a `[system]`
and a `[user]` section, and optionally an `[assistant]` section: the start of the model's answer,
prefilled (the model continues that text instead of starting its turn afresh, which keeps a small
model in the asked-for format; the completion includes it, so the parser sees it). Placeholders
are `{word}` and are replaced literally (not `str.format`), so code and JSON in a template need no
escaping. The version is part of every record's key:
changing a template without raising it would silently mix outputs of two prompts, so the journal
also stores the template's hash and a resumed run refuses a changed text under the same version.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

_FILE_RE = re.compile(r"^(?P<name>[a-z0-9_]+)\.v(?P<version>\d+)\.txt$")
_PLACEHOLDER_RE = re.compile(r"\{([a-z_]+)\}")


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """One parsed template file."""

    name: str
    """Discipline name, or `code`."""
    version: int
    """Raised whenever the wording changes; part of every record key."""
    system: str
    """System message."""
    user: str
    """User message with `{placeholders}`."""
    source: str
    """Where it was read from (file path or package resource), for messages."""
    sha: str
    """First 12 hex digits of the sha256 of the file's bytes."""
    prefill: str = ""
    """Start of the assistant turn the model continues (`[assistant]` section); empty: none."""

    @property
    def tag(self) -> str:
        """`name.vN`: the prompt version written into records and keys."""
        return f"{self.name}.v{self.version}"

    def render(self, **values: str) -> list[dict[str, str]]:
        """Chat messages with every placeholder filled; `KeyError`-free: a missing value is an error.

        With a prefill the last message is the assistant's unfinished turn: generators continue it
        (`generators.base.prefill_of`)."""
        messages = [{"role": "system", "content": self.system}, {"role": "user", "content": self.fill(**values)}]
        if self.prefill:
            messages.append({"role": "assistant", "content": self.prefill})
        return messages

    def fill(self, **values: str) -> str:
        """The user section with its placeholders replaced."""
        missing = sorted(set(_PLACEHOLDER_RE.findall(self.user)) - set(values))
        if missing:
            raise ValueError(f"prompt {self.source}: no value for placeholder(s) {missing}")
        return _PLACEHOLDER_RE.sub(lambda m: str(values[m.group(1)]), self.user)


def parse_template(text: str, source: str) -> PromptTemplate:
    """Parse one template; errors name the file, line and what is wrong."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        if current is None and line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if sep and key.strip() in ("name", "version"):
                header[key.strip()] = value.strip()
            continue
        stripped = line.strip()
        if stripped in ("[system]", "[user]", "[assistant]"):
            current = stripped[1:-1]
            if current in sections:
                raise ValueError(f"{source}:{lineno}: section [{current}] appears twice")
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
        elif stripped:
            raise ValueError(f"{source}:{lineno}: text before the [system] section: {stripped[:40]!r}")
    for key in ("name", "version"):
        if key not in header:
            raise ValueError(f"{source}: header line '# {key}: ...' is missing")
    if not header["version"].isdigit():
        raise ValueError(f"{source}: version must be an integer, got {header['version']!r}")
    for section in ("system", "user"):
        if not "\n".join(sections.get(section, [])).strip():
            raise ValueError(f"{source}: section [{section}] is missing or empty")
    return PromptTemplate(
        name=header["name"],
        version=int(header["version"]),
        system="\n".join(sections["system"]).strip(),
        user="\n".join(sections["user"]).strip() + "\n",
        source=source,
        sha=hashlib.sha256(text.encode()).hexdigest()[:12],
        prefill="\n".join(sections.get("assistant", [])).strip(),
    )


def _candidates(prompt_dir: Path | None) -> dict[str, tuple[int, str, str]]:
    """name -> (version, text, source) of the highest version, user folder over package data."""
    found: dict[str, tuple[int, str, str]] = {}
    package = resources.files("cpt.synth") / "prompts"
    for entry in package.iterdir():
        m = _FILE_RE.match(entry.name)
        if m:
            _keep_highest(found, m, entry.read_text(encoding="utf-8"), f"cpt/synth/prompts/{entry.name}")
    if prompt_dir is not None:
        if not prompt_dir.is_dir():
            raise FileNotFoundError(f"--prompt-dir {prompt_dir} is not a folder")
        user: dict[str, tuple[int, str, str]] = {}
        for path in sorted(prompt_dir.iterdir()):
            m = _FILE_RE.match(path.name)
            if m:
                _keep_highest(user, m, path.read_text(encoding="utf-8"), str(path))
        found.update(user)
    return found


def _keep_highest(found: dict, m: re.Match, text: str, source: str) -> None:
    version = int(m.group("version"))
    if m.group("name") not in found or version > found[m.group("name")][0]:
        found[m.group("name")] = (version, text, source)


def load_template(name: str, prompt_dir: Path | None = None) -> PromptTemplate:
    """The template for `name`: the highest version in `prompt_dir` if it has one, else ours."""
    found = _candidates(prompt_dir)
    if name not in found:
        raise FileNotFoundError(f"no prompt template named {name!r} (looked for {name}.vN.txt)")
    version, text, source = found[name]
    template = parse_template(text, source)
    if template.name != name or template.version != version:
        raise ValueError(
            f"{source}: header says {template.name}.v{template.version} but the file name says {name}.v{version}"
        )
    return template


def code_seed_path() -> Path:
    """The seed file of in-context example pairs we ship (problem -> explained solution)."""
    return Path(str(resources.files("cpt.synth") / "prompts" / "code_seed.v1.jsonl"))
