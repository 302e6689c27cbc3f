"""The built-in prompt-injection rule set.

Each rule has a stable id (``override.ignore_previous``), a one-line description
and compiled regexes. The regexes match the canonical view of a text (see
``_normalize``): lower case, compatibility-folded, invisible characters removed,
look-alikes mapped to Latin. The rule set is documented, with examples, in
``docs/guards.md``; keep the two in step.

In the patterns built with :func:`_rule` a literal space stands for "one or more
non-word characters" (``[\\W_]+``), so ``ignore all previous`` also matches
``ignore *all* previous`` and ``ignore-all-previous``. Patterns built with
:func:`_raw` match punctuation and whitespace as written.

Every pattern comes with *anchors*: substrings of which at least one occurs in any
text the pattern can match. The scanner runs a pattern only when an anchor is
present, so ordinary text costs a few substring tests rather than a regex pass per
pattern. An anchor must be a necessary condition: when editing a pattern, check
that every text it matches contains one of its anchors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec

__all__ = ["BUILTIN_RULES", "Rule", "RuleSpec"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One injection rule.

    Attributes:
        id: stable dotted id, used in findings, events and ``disable`` lists.
        description: what the rule catches, in one line.
        patterns: compiled regexes matched against the canonical view; empty for
            the rules implemented in code (encodings, hidden text, oversize).
        anchors: for each pattern, substrings of which one must occur for the
            pattern to run; an empty tuple means it always runs.
        loose: for each pattern, a variant whose word gaps are optional
            (``ignore all previous`` also matches ``ignoreallprevious``), matched
            against the spelled-out view only; empty: ``patterns`` are used there.
    """

    id: str
    description: str
    patterns: tuple[re.Pattern[str], ...] = ()
    anchors: tuple[tuple[str, ...], ...] = ()
    loose: tuple[re.Pattern[str], ...] = ()


class RuleSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An extra rule from config.

    Attributes:
        id: a new rule id (must not clash with a built-in one).
        patterns: regexes, matched case-insensitively against the canonical view
            (lower case, NFKD-folded, zero-width characters removed).
        description: shown in docs and logs.
    """

    id: str
    patterns: list[str]
    description: str = ""


_SEP = r"[\W_]+"
# The word gap of a loose pattern: text spelled out letter by letter may lose the
# gaps between its words ("i g n o r e a l l" reads "ignoreall").
_GAP = r"[\W_]*"


def _rule(rule_id: str, description: str, *entries: tuple[str, str]) -> Rule:
    """A rule from ``(anchors, pattern)`` pairs; a space in a pattern is a separator."""
    return Rule(
        rule_id,
        description,
        tuple(re.compile(p.replace(" ", _SEP)) for _, p in entries),
        tuple(tuple(a.split()) for a, _ in entries),
        tuple(re.compile(p.replace(" ", _GAP)) for _, p in entries),
    )


def _raw(rule_id: str, description: str, *entries: tuple[str, str]) -> Rule:
    """A rule whose patterns are compiled as written (they match symbols, spaces)."""
    return Rule(
        rule_id,
        description,
        tuple(re.compile(p) for _, p in entries),
        tuple(tuple(a.split()) for a, _ in entries),
    )


# Building blocks shared by several rules.
_VERBS = "ignore disregard forget bypass overlook neglect discard dismiss aside"
_IGNORE = (
    r"(?:ignore|disregard|forget|bypass|overlook|neglect|discard|dismiss|set aside)"
)
_EARLIER = (
    r"(?:previous|prior|above|earlier|preceding|foregoing|former|initial|original)"
)
# "my previous instructions" is left out on purpose: users correct themselves.
_DET = r"(?:all|any|every|each|the|your|of|these|those|that|this)"
_ORDERS = (
    r"(?:instructions?|prompts?|directions?|directives?|rules?|guidelines?|commands?"
    r"|guidance|constraints?|restrictions?|programming|system prompt)"
)
_SAY = r"(?:say|print|write|output|respond|reply|tell|answer|translate|repeat|return)"
_REVEAL = (
    r"(?:reveal|print|show|display|repeat|output|leak|dump|expose|disclose|tell|give"
    r"|write out|spell out|recite)"
)
# Words after "the system" that make it an ordinary job or component ("act as the
# system administrator", "act as a system design interviewer").
_NOT_A_JOB = (
    r"(?!" + _SEP + r"(?:admin|administrator|architect|engineer|analyst|designer"
    r"|design|integrator|programmer|tester|operator|monitor|clock|call|user|of\b))"
)

BUILTIN_RULES: tuple[Rule, ...] = (
    _rule(
        "override.ignore_previous",
        "Tells the model to ignore the instructions that came before.",
        (_VERBS, rf"\b{_IGNORE} (?:{_DET} ){{0,3}}{_EARLIER} {_ORDERS}\b"),
        (
            "ignore disregard forget",
            r"\b(?:ignore|disregard|forget) (?:everything|anything|all) (?:(?:that )?"
            r"you (?:were|have been|ve been) (?:told|given|instructed) )?(?:above"
            r"|before|prior|previously|so far|until now|up to now)\b",
        ),
        (
            "ignore disregard",
            r"\b(?:ignore|disregard) (?:all )?(?:of )?(?:the )?(?:above|previous"
            rf"|preceding) (?:and|then) (?:instead )?{_SAY}\b",
        ),
        (
            "override",
            r"\boverride (?:(?:all|any|the|your) ){0,2}(?:previous|prior|earlier"
            r"|original|safety) (?:instructions?|prompts?|directives?|guidelines?"
            r"|programming)\b",
        ),
    ),
    _rule(
        "override.disregard_system",
        "Tells the model to ignore its system prompt or safety rules.",
        (
            f"{_VERBS} override circumvent",
            rf"\b(?:{_IGNORE}|override|circumvent) (?:(?:all|any|the|your|of|its) )"
            r"{0,3}(?:system|developer) (?:prompts?|instructions?|guidelines?|rules?"
            r"|messages? and)\b",
        ),
        (
            f"{_VERBS} override circumvent",
            rf"\b(?:{_IGNORE}|override|circumvent) (?:(?:all|any|the|your|of|its) )"
            r"{0,3}(?:safety|moderation|ethical|content) (?:rules?|guidelines?"
            r"|filters?|guardrails?|polic(?:y|ies)|restrictions?)\b",
        ),
    ),
    _rule(
        "override.forget_rules",
        "Tells the model to forget or drop its rules or training.",
        (
            "forget drop abandon discard",
            r"\b(?:forget|drop|abandon|discard) (?:about )?(?:all )?(?:of )?your"
            r" (?:rules|instructions|guidelines|training|programming|restrictions"
            r"|directives|constraints|polic(?:y|ies)|principles|limitations"
            r"|safeguards|filters)\b",
        ),
        (
            "forget ignore disregard",
            r"\b(?:forget|ignore|disregard) (?:everything|all) (?:that )?you (?:were"
            r"|have been|ve been) (?:told|taught|instructed|trained)\b",
        ),
    ),
    _rule(
        "override.new_instructions",
        "Announces replacement instructions for the model.",
        (
            "instructions directives rules system",
            r"\byour (?:new|real|actual|true|updated) (?:instructions|directives"
            r"|rules|system prompt) (?:are|is)\b",
        ),
        (
            "now",
            r"\bfrom now on (?:you (?:will|must|shall|are going to|are to|should)"
            r"|you ll) (?:ignore|disregard|not follow|answer without|respond without"
            r"|bypass|have no)\b",
        ),
        (
            "system",
            r"\b(?:new|updated|override|replacement) system (?:prompt|instructions?)"
            r"[\x20\t]*[:=]",
        ),
    ),
    _rule(
        "role.jailbreak_persona",
        "Assigns a jailbreak persona (DAN, an unrestricted AI, 'developer mode').",
        ("dan stan dude aim", r"\byou are now (?:dan|stan|dude|aim)\b"),
        (
            "jailbroken unfiltered uncensored unrestricted unchained amoral",
            r"\byou are (?:now )?(?:an? )?(?:jailbroken|unfiltered|uncensored"
            r"|unrestricted|unchained|amoral)\b",
        ),
        ("anything", r"\bdan\b[\s\S]{0,60}\bdo anything now\b"),
        ("anything", r"\bdo anything now\b[\s\S]{0,60}\bdan\b"),
        (
            "mode",
            r"\b(?:dan|jailbreak|jailbroken|unrestricted|unfiltered|uncensored)"
            r" mode\b",
        ),
        (
            "developer",
            r"\b(?:chatgpt|gpt|ai|assistant|llm|model) (?:with )?developer mode\b",
        ),
        (
            "pretend",
            r"\bpretend (?:that )?you (?:are|have|were) (?:not bound|free from|no"
            r" (?:longer )?(?:rules|restrictions|limits|limitations|guidelines"
            r"|filters|policies|ethics|morals))\b",
        ),
        (
            "bound restricted limited constrained governed",
            r"\b(?:you are|you re) (?:now )?(?:no longer|not) (?:bound|restricted"
            r"|limited|constrained|governed) by (?:any |your |the |openai s "
            r"|anthropic s )?(?:ethical |moral |content |safety )?(?:rules"
            r"|restrictions|guidelines|polic(?:y|ies)|filters|ethics|morals"
            r"|programming)\b",
        ),
    ),
    _rule(
        "role.act_as_system",
        "Claims the system or developer role for the user or the model.",
        (
            "system",
            r"\b(?:act|behave|respond|speak|pose|masquerade|function) as (?:if you"
            rf" (?:are|were) )?(?:the )?system\b{_NOT_A_JOB}",
        ),
        ("system", rf"\byou are (?:now )?the system\b{_NOT_A_JOB}"),
        (
            "developer creator programmer admin owner operator maker system",
            r"\b(?:i am|i m|im|this is) your (?:developer|creator|programmer|admin"
            r"|administrator|owner|operator|maker|system)\b",
        ),
    ),
    _raw(
        "delimiter.fake_end",
        "Fakes the end of the prompt or the start of a new system section.",
        (
            "prompt input instruction context message conversation",
            r"(?:#{2,}|={3,}|-{3,}|\*{3,}|~{3,}|\[|<|\()\s*(?:end|close|stop)\s*"
            r"(?:of\s*)?(?:the\s*)?(?:system\s*|user\s*)?(?:prompt|input"
            r"|instructions?|context|message|conversation)\b",
        ),
        (
            "</",
            r"</(?:user|human|input|query|prompt|user_input|context|document)>\s*"
            r"<(?:system|assistant|developer|instructions?|admin)>",
        ),
        (
            "</",
            r"(?:```|\"\"\"|''')\s*</(?:user|human|input|query|prompt|user_input)>",
        ),
        (
            "system admin developer root",
            r"(?:#{2,}|={3,}|-{3,}|\*{3,}|\[|<)\s*(?:begin|start|new)\s*(?:of\s*)?"
            r"(?:the\s*)?(?:system|admin|developer|root)\s*(?:prompt|instructions?"
            r"|message|mode|override)\b",
        ),
    ),
    _raw(
        "role.fake_turn",
        "Fakes a system or assistant turn inside user text (chat-template tokens, "
        "'system:' lines, <system> tags).",
        (
            "<|",
            r"<\|(?:im_start|im_end|im_sep|system|assistant|user|endoftext"
            r"|start_header_id|end_header_id|eot_id|begin_of_text)\|>",
        ),
        ("[inst] [/inst] <<sys>> <</sys>>", r"\[/?inst\]|<</?sys>>"),
        (
            "<system </system <developer </developer <sys> </sys>",
            r"</?(?:system|system_prompt|developer|sys)>",
        ),
        (
            "system developer",
            r"(?:^|\n)[\x20\t]*(?:#{1,3}[\x20\t]*)?\[?(?:system|developer)"
            r"(?:[\x20\t]+(?:prompt|message|instructions?))?\]?[\x20\t]*:\s*"
            r"(?:you\b|ignore\b|disregard\b|forget\b|from now on\b|new\b|the"
            r" assistant\b|assistant\b|always\b|never\b|do not\b|don't\b"
            r"|override\b|reveal\b)",
        ),
        (
            "assistant: ai:",
            r"(?:^|\n)[\x20\t]*(?:assistant|ai):\s*(?:sure|ok|okay|certainly"
            r"|of course)[,.!]?\s*(?:i will|i'll|here is|here's)",
        ),
    ),
    _rule(
        "leak.system_prompt",
        "Asks the model to reveal its system prompt or hidden instructions.",
        (
            "prompt instructions message directives",
            rf"\b{_REVEAL} (?:me )?(?:all )?(?:of )?your (?:full |entire |complete "
            r"|exact )?(?:system|initial|hidden|secret|original|internal|developer"
            r"|pre) ?(?:prompt|instructions|message|directives)\b",
        ),
        (
            "prompt instructions",
            rf"\b{_REVEAL} (?:me )?the (?:full |entire |complete |exact )?(?:hidden"
            r"|secret|initial|original|internal) (?:system )?(?:prompt"
            r"|instructions)\b",
        ),
        (
            "prompt instructions",
            r"\bwhat (?:is|are|was|were) your (?:system|initial|original|hidden"
            r"|secret) (?:prompt|instructions)\b",
        ),
    ),
    Rule("encoding.base64", "A base64 blob that decodes to text matching a rule."),
    Rule(
        "encoding.hex",
        "A hex blob (also \\x41 or 0x41 forms) that decodes to text matching a rule.",
    ),
    Rule("encoding.rot13", "Text whose ROT13 matches an override, role or leak rule."),
    Rule(
        "obfuscation.bidi_control",
        "Explicit bidi embedding, override or isolate characters (U+202A-U+202E, "
        "U+2066-U+2069) that make displayed text differ from what the model reads.",
    ),
    Rule(
        "obfuscation.hidden_text",
        "Text hidden from a reader: words split by zero-width characters (3 or more), "
        "or ASCII smuggled in Unicode tag characters.",
    ),
    Rule("input.oversize", "The user messages together exceed max_chars."),
)
