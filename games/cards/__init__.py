"""Collect cards (集卡, in the manner of Alipay's 集五福): members spend draw chances (the inventory
item ``cards:<campaign>``, earned from rules, quests and tiers) on cards drawn with published odds
within each card type's daily issue budget, with a pity counter towards the rare card, gift cards
to one another, and combine a full set (a universal card standing in for a missing one); at the
deadline the campaign's prize pool is split among those who combined.

``config`` is the programme section ``[games.cards.<campaign>]`` and its checks; ``rules`` the
pure rules (the draw, its fallback when a concurrent draw took the budget, pity, combining, the
split of the pool), property-tested in ``tests/games/test_cards_rules.py``.
"""
