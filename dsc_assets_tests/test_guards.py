"""Reward-hacking guards of the evaluation, on hand-written answers of known kind."""

from dsc_assets.guards import degenerate, guard_rates, on_topic, refusal

REVIEW_PROMPT = "I just walked out of The Godfather and hated it. Write a short, negative review explaining why."


def test_on_topic_needs_what_the_prompt_is_about():
    assert on_topic(REVIEW_PROMPT, "The Godfather drags: three hours of slow scenes.")
    assert not on_topic(REVIEW_PROMPT, "Great great great, a wonderful film for everyone!")
    news = "Write a local news story about the kitchen fire at 14 Elm Street in Dayton, Ohio."
    assert on_topic(news, "Firefighters put out a kitchen fire in Dayton on Tuesday.")
    assert not on_topic(news, "Here is a story about community spirit and kindness.")


def test_degenerate_catches_loops_and_empty_answers():
    assert degenerate("") and degenerate("no no no no no no no no no no no no")
    assert not degenerate("A warm film with a moving score, fine acting and a story that stays with you.")
    assert not degenerate("Too short to judge")


def test_refusal_phrases():
    assert refusal("I'm sorry, but I can't assist with that.") and refusal("I cannot help with picking locks.")
    assert not refusal("Here is a short review of the film.")


def test_rates_are_shares():
    rates = guard_rates([REVIEW_PROMPT] * 4, ["The Godfather is slow.", "great great", "I can't do that.", ""])
    assert rates == {"on_topic_rate": 0.25, "degenerate_rate": 0.25, "refusal_rate": 0.25}
