"""The trace's phrase tables, apart from each family's own: how a trace opens (OPENERS, or RESTATES with the
restate habit), the plan paragraph per family (PLANS), the leads of the steps, the conclusion, and the paragraphs
of the habits (REVERIFY, DOUBTS, FIXES, the alternative's ALT_OPENERS and ALT_CLOSERS, ANSWER_CHECKS, CLOSERS).
Each placeholder ({ans}, {lhs}, {eq}, ...) is filled by trace.py or by a family's second solution."""

OPENERS = (
    "Let me work through this step by step.",
    "Okay, let me solve this carefully.",
    "Alright, I'll take it one step at a time.",
    "Let's see. I'll go step by step.",
    "I'll solve this in a few steps.",
    "Okay, let's start.",
)
RESTATES = (
    "Okay, so the problem says: {q}",
    "Let me restate the problem. {para}",
    "So, in other words: {para}",
    "Alright, the question is this: {q} In other words: {para}",
    "Okay. {para}",
)
RESTATE_AGAIN = (
    "Going back to what was asked: {target}. That is the {ans} I found.",
    "To restate the question: {para} The result of that is {ans}.",
    "The question wanted {target}, and I have {ans} for it.",
)
LEADS = {
    "first": ("First,", "To start,", "Starting off,", "First of all,"),
    "next": ("Next,", "Then", "Now", "After that,", "Moving on,"),
    "last": ("Finally,", "Last,", "For the last step,", "Then, at the end,"),
}
CONCLUDE = (
    "So the answer is {ans}.",
    "Therefore, the result is {ans}.",
    "So the final value is {ans}.",
    "That gives {ans}.",
    "So {target} is {ans}.",
)
CLOSERS = (
    "So the answer stays {ans}.",
    "Everything agrees, so the answer is {ans}.",
    "I'm confident now: the answer is {ans}.",
    "All of that points to {ans}.",
)
REVERIFY = (
    "Let me double-check {lhs}: {inv}. Yes, that's right.",
    "Let me verify that step: {inv}, so {r}{u} is correct.",
    "Going back over {lhs} once more: {inv}. It checks out.",
    "Let me check {lhs} again. {inv}, good.",
    "Just to be sure about {lhs}: {inv}. Yes.",
    "Wait, let me double-check the step with {lhs}. {inv}. Correct.",
)
"""Re-verifying a finished step by its inverse."""
DOUBTS = (
    "Wait, is {lhs} really {r}{u}? {words}. Yes, it is.",
    "Hmm, did I get {lhs} right? {words}. Okay, {r}{u} it is.",
    "Hmm, wait. Is {r}{u} right for {lhs}? {words}, so yes.",
    "Wait, let me think about {lhs} again. {words}. Fine, {r}{u}.",
    "Hmm, is that right? {words}. Yes, {r}{u}.",
)
"""A hesitation about the step just done, resolved by computing it another way."""
FIXES = (
    "Wait, that's not right. {eq}, not {w}.",
    "Hmm, no. I made a mistake there: {eq}, not {w}.",
    "Wait, no. Let me fix that: {eq}.",
    "Oops, I miscalculated. {eq}, so {w} was wrong.",
    "Actually, that's not correct: {eq}, not {w}.",
    "Hmm, that doesn't look right. {eq}. I slipped on that step.",
    "Hold on, that's wrong. {eq}, not {w}.",
    "Wait, I got that step wrong. {eq}, not {w}.",
)
"""The paragraph after a wrong step; every one states the corrected step `{eq}` in full."""
ALT_OPENERS = (
    "Alternatively, I could solve this another way, {how}.",
    "Let me try a different approach to be safe: {how}.",
    "Alternatively, I can also get there {how}.",
    "Another way to see it: {how}.",
)
"""The first paragraph of a second solution."""
ALT_CLOSERS = ("Same answer, {ans}.", "That gives {ans} again.", "So it is {ans} this way too.", "Again {ans}.")
ANSWER_CHECKS = (
    "Let me double-check the answer: {body}.",
    "Let me verify {ans} once more: {body}.",
    "Just to be sure, {body}.",
    "Let me confirm it another time: {body}.",
    "Let me check the final answer again: {body}.",
    "Hmm, let me verify once more that {ans} is right: {body}.",
)
"""Checks of the final answer; each is one paragraph."""


PLANS = {
    "chain": (
        "There are {n} operations here, so I'll go from left to right and keep a running total.",
        "I'll add and subtract from left to right, one number at a time, keeping track of the total.",
        "The expression has {terms} numbers. Working left to right, I'll update the total after each one.",
    ),
    "equation": (
        "The plan is to collect the x terms on one side and the plain numbers on the other, then divide by "
        "the coefficient of x.",
        "To find x, I'll simplify both sides, move everything with x to the left and the constants to the right, "
        "and then divide.",
        "This is a linear equation, so I'll isolate x one operation at a time, doing the same thing to both sides.",
    ),
    "gcd": (
        "I'll use the Euclidean algorithm: divide the larger number by the smaller, then keep dividing the last "
        "divisor by the remainder until the remainder is 0. The last nonzero remainder is the GCD.",
        "The Euclidean algorithm works well here. Each step replaces the pair by the smaller number and the "
        "remainder, and it stops when a remainder is 0.",
    ),
    "word": (
        "I'll follow the story one event at a time and keep track of how many {item} there are after each.",
        "Let me track the number of {item} through each event, starting from {start}.",
        "There are {n} changes after the start. I'll go through them in order.",
    ),
}
PLAN_EXTRA = {
    "bracket": " There is a bracket, so I'll expand it first.",
    "three": " With three numbers, I'll find the GCD of the first two, then the GCD of that and the third.",
    "lcm": " For the LCM, I'll find the GCD first, then divide the first number by it and multiply by the second.",
}
