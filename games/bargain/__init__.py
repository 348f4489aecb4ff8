"""Bargain (砍价, "help me cut the price"): a member starts a bargain on a campaign's item, at its
price and for a limited time; friends help, and each help cuts the current price, until the
bargain reaches its floor and the owner gets the item as a coupon.

A bargain's whole cut schedule is drawn once, when it starts, from its seed (``rules.bargain_seed``:
the campaign, the owner and the start operation's id), with the campaign's algorithm
(``rules.unit_cuts``); the bargain's object keeps the schedule's prefix sums and gives each help
its cut (``rules.help_cut``), so a designer can replay any bargain (``rules.replay``). The section
is ``config.Campaigns`` (``[games.bargain.<campaign>]``), its cross-checks ``config.check``.
"""
