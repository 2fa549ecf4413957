"""`tandem data generate`: a synthetic but realistic interaction log, deterministic by seed.

The world (built once per seed):

* categories with different sizes and price levels (lognormal prices per category);
* items with a category, a Zipf-like popularity rank within their category, a latent quality,
  and a created_ts: most exist before the period, some appear mid-period (and get a novelty boost);
* users with heavy-tailed (lognormal) activity, a signup time (some sign up mid-period), and a
  latent taste over categories (Dirichlet) that drifts linearly from a starting taste toward a
  second, independent one over the period — so recent behaviour predicts the future better than
  old behaviour.

Each day (simulated independently from its own seed stream, so the output does not depend on how
many days are held in memory) the day's share of events is produced as sessions: a user (by
activity, among those signed up), a start time (evening-heavy time-of-day profile), an intent
category drawn from the user's taste at that moment; the session views items mostly of that
category (by popularity) and each view may go down the funnel view → click → add_to_cart →
purchase → rating, with probabilities that rise with the user's affinity for the category and the
item's quality. add_to_cart and purchase carry value = price, ratings a 1-5 value correlated with
affinity and quality; views and clicks have no value.

The simulation is pure numpy (`build_world`, `simulate_day`); `generate_dataset` turns each day
into an Arrow table and writes it with the shared layout of `pipelines.dataset`, so memory stays
bounded by one day of events however large the dataset.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.dataset import (
    US_PER_DAY,
    Progress,
    items_path,
    reset_dataset_dir,
    users_path,
    write_events_partitioned,
    write_metadata,
    write_table,
)
from tandem.schema import EVENT_SCHEMA, EVENT_TYPES, ITEM_SCHEMA, TS_TYPE, USER_SCHEMA, format_ts

DEFAULT_START = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday
US_PER_S = 1_000_000

# index of each funnel step in EVENT_TYPES order: a view's k-th event is FUNNEL[k]
FUNNEL: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase", "rating")
_FUNNEL_CODES = np.array([EVENT_TYPES.index(t) for t in FUNNEL], dtype=np.int8)
# seconds after the previous funnel step: fixed minimum + exponential mean
_STEP_MIN_S = np.array([0.0, 2.0, 5.0, 10.0, 30.0])
_STEP_MEAN_S = np.array([0.0, 8.0, 30.0, 90.0, 300.0])

# relative activity by hour of day (UTC, taken as the users' local time): quiet nights, evening peak
HOUR_PROFILE = np.array(
    [0.35, 0.2, 0.12, 0.08, 0.08, 0.12, 0.3, 0.55, 0.75, 0.85, 0.9, 0.95,
     1.05, 1.0, 0.9, 0.9, 0.95, 1.1, 1.4, 1.75, 2.0, 1.9, 1.45, 0.8]
)  # fmt: skip
WEEKEND_FACTOR = 1.2
GROWTH_OVER_PERIOD = 0.2  # daily volume grows by this fraction from the first to the last day

CATEGORY_NAMES: tuple[str, ...] = (
    "books", "electronics", "fashion", "home", "garden", "toys", "sports", "beauty", "grocery", "music",
    "movies", "games", "outdoors", "kitchen", "pets", "office", "automotive", "health", "jewelry", "shoes",
    "baby", "tools", "art", "crafts", "travel", "photo", "audio", "computers", "phones", "furniture",
    "lighting", "bedding", "watches", "bags", "stationery", "fitness", "cycling", "camping", "wine", "tea",
)  # fmt: skip


@dataclass(frozen=True)
class GeneratorConfig:
    """Size, period, seed and behaviour knobs of a generated dataset (all deterministic given the seed)."""

    n_users: int = 2_000
    n_items: int = 500
    n_events: int = 50_000
    n_categories: int = 12
    days: int = 30
    start: datetime = DEFAULT_START
    seed: int = 7
    # how far each user's taste moves toward a new, independent one by the end (0 = none, 1 = all the way)
    drift: float = 0.8
    # Dirichlet concentration per category of users' tastes: lower = narrower tastes
    taste_concentration: float = 0.3
    zipf_exponent: float = 1.1  # item popularity within a category ~ 1 / rank**exponent
    activity_sigma: float = 1.3  # lognormal sigma of user activity (heavy tail)
    new_user_share: float = 0.25  # users who sign up during the period (they start cold)
    new_item_share: float = 0.2  # items created during the period
    novelty_boost: float = 2.0  # extra popularity of a brand-new item, decaying over about a week
    session_views: float = 5.0  # mean items viewed per session (geometric)
    session_focus: float = 0.85  # share of views in the session's intent category
    click_rate: float = 0.25  # click probability for an average affinity and quality item
    cart_rate: float = 0.3  # add_to_cart given click
    purchase_rate: float = 0.5  # purchase given add_to_cart
    rating_rate: float = 0.3  # rating given purchase

    def __post_init__(self) -> None:
        for name in ("n_users", "n_items", "n_events", "n_categories", "days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.n_items < self.n_categories:
            raise ValueError(f"n_items={self.n_items} < n_categories={self.n_categories}: every category needs an item")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))
        if not isinstance(self.start, datetime):
            raise ValueError(f"start: expected a datetime, got {type(self.start).__name__}")
        if self.start.tzinfo is None:  # naive means UTC
            object.__setattr__(self, "start", self.start.replace(tzinfo=UTC))
        else:
            object.__setattr__(self, "start", self.start.astimezone(UTC))
        for name in ("drift", "new_user_share", "new_item_share", "session_focus"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected a value in [0, 1], got {getattr(self, name)!r}")
        for name in ("click_rate", "cart_rate", "purchase_rate", "rating_rate"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name}: expected a probability in (0, 1), got {getattr(self, name)!r}")
        for name in ("taste_concentration", "zipf_exponent", "activity_sigma", "session_views"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a positive number, got {getattr(self, name)!r}")
        if self.session_views < 1:
            raise ValueError(f"session_views: expected a mean of at least 1 view, got {self.session_views!r}")
        if self.novelty_boost < 0:
            raise ValueError(f"novelty_boost: expected a number >= 0, got {self.novelty_boost!r}")

    @property
    def start_us(self) -> int:
        return int(self.start.timestamp()) * US_PER_S + self.start.microsecond

    @property
    def end_us(self) -> int:
        """Exclusive end of the period: start + days."""
        return self.start_us + self.days * US_PER_DAY

    def params(self) -> dict[str, Any]:
        """The config as JSON-ready values (for dataset.json)."""
        d = asdict(self)
        d["start"] = format_ts(self.start)
        return d


SIZES: dict[str, GeneratorConfig] = {
    # the whole batch path runs on this in about a minute
    "demo": GeneratorConfig(n_users=2_000, n_items=500, n_events=50_000, n_categories=12, days=30),
    "small": GeneratorConfig(n_users=20_000, n_items=5_000, n_events=500_000, n_categories=20, days=60),
    "medium": GeneratorConfig(n_users=100_000, n_items=20_000, n_events=2_000_000, n_categories=30, days=90),
    "large": GeneratorConfig(n_users=500_000, n_items=50_000, n_events=10_000_000, n_categories=40, days=120),
}


def get_preset(size: str, **overrides: Any) -> GeneratorConfig:
    """A preset from SIZES with some fields replaced (e.g. seed=...); ValueError names the known sizes."""
    if size not in SIZES:
        raise ValueError(f"unknown dataset size {size!r}; expected one of {', '.join(SIZES)}")
    return replace(SIZES[size], **overrides)


# ---------------------------------------------------------------------------------------------- the world


@dataclass
class World:
    """Everything fixed for a seed. Items are held sorted by category (internal index); ids are shuffled."""

    category_names: list[str]
    item_category: np.ndarray  # (n_items,) int, non-decreasing
    category_bounds: np.ndarray  # (n_categories + 1,) item index where each category starts
    item_number: np.ndarray  # (n_items,) the number in the item's id, a permutation of 0..n_items-1
    item_popularity: np.ndarray  # (n_items,) Zipf weight within the category
    item_quality: np.ndarray  # (n_items,) latent quality ~ N(0, 1)
    item_price: np.ndarray  # (n_items,) float
    item_created_us: np.ndarray  # (n_items,) int64
    user_activity: np.ndarray  # (n_users,) relative session rate
    user_signup_us: np.ndarray  # (n_users,) int64
    taste_start: np.ndarray  # (n_users, n_categories) float32, rows sum to 1
    taste_end: np.ndarray  # (n_users, n_categories) float32, rows sum to 1
    item_ids: pa.Array = field(repr=False)  # (n_items,) id strings, internal order
    user_ids: pa.Array = field(repr=False)  # (n_users,) id strings


def _seed_sequence(config: GeneratorConfig, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=key))


def _prefixed_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, type=pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _id_width(n: int, minimum: int) -> int:
    return max(minimum, len(str(max(n - 1, 0))))


def category_names(n_categories: int) -> list[str]:
    if n_categories <= len(CATEGORY_NAMES):
        return list(CATEGORY_NAMES[:n_categories])
    return [f"cat_{i:0{len(str(n_categories - 1))}d}" for i in range(n_categories)]


def _dirichlet_rows(rng: np.random.Generator, alpha: np.ndarray, n: int) -> np.ndarray:
    # gamma draws normalized per row == Dirichlet, in float32 to keep large presets small
    g = rng.standard_gamma(alpha, size=(n, len(alpha))).astype(np.float32) + np.float32(1e-7)
    return g / g.sum(axis=1, keepdims=True)


def build_world(config: GeneratorConfig) -> World:
    """Categories, items and users with their latent taste, all from the seed."""
    rng = _seed_sequence(config, 0)
    k, n_items, n_users = config.n_categories, config.n_items, config.n_users
    start, period = config.start_us, config.days * US_PER_DAY

    # category sizes and appeal differ; every category gets at least one item
    category_share = rng.dirichlet(np.full(k, 3.0))
    sizes = 1 + rng.multinomial(n_items - k, category_share)
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    item_category = np.repeat(np.arange(k), sizes)
    rank = np.arange(n_items) - bounds[item_category]
    popularity = 1.0 / (rank + 1.0) ** config.zipf_exponent
    quality = rng.standard_normal(n_items)
    log_price_level = rng.uniform(math.log(5.0), math.log(150.0), size=k)
    price = np.maximum(0.5, np.round(np.exp(log_price_level[item_category] + 0.5 * rng.standard_normal(n_items)), 2))
    is_new = rng.random(n_items) < config.new_item_share
    is_new[rank == 0] = False  # each category's head item exists from the start
    old_created = start - rng.integers(US_PER_S, 365 * US_PER_DAY, size=n_items)
    # new items appear before the last day starts, so each is on offer at least one day
    new_created = start + rng.integers(0, max(period - US_PER_DAY, 1), size=n_items)
    created = np.where(is_new, new_created, old_created).astype(np.int64)
    item_number = rng.permutation(n_items)

    activity = rng.lognormal(0.0, config.activity_sigma, size=n_users)
    is_new_user = rng.random(n_users) < config.new_user_share
    is_new_user[0] = False  # someone is around on day one
    signup = np.where(
        is_new_user,
        start + rng.integers(0, period, size=n_users),
        start - rng.integers(US_PER_S, 730 * US_PER_DAY, size=n_users),
    ).astype(np.int64)
    alpha = np.maximum(config.taste_concentration * k * category_share, 0.02)
    taste_start = _dirichlet_rows(rng, alpha, n_users)
    taste_end = _dirichlet_rows(rng, alpha, n_users)

    return World(
        category_names=category_names(k),
        item_category=item_category,
        category_bounds=bounds,
        item_number=item_number,
        item_popularity=popularity,
        item_quality=quality,
        item_price=price,
        item_created_us=created,
        user_activity=activity,
        user_signup_us=signup,
        taste_start=taste_start,
        taste_end=taste_end,
        item_ids=_prefixed_ids("i", item_number, _id_width(n_items, 5)),
        user_ids=_prefixed_ids("u", np.arange(n_users), _id_width(n_users, 6)),
    )


def daily_event_counts(config: GeneratorConfig) -> np.ndarray:
    """How many events each day gets: weekends busier, slow growth; sums to n_events exactly."""
    rng = _seed_sequence(config, 1)
    day = np.arange(config.days)
    weekday = (config.start.weekday() + day) % 7
    weight = (1.0 + GROWTH_OVER_PERIOD * day / max(config.days - 1, 1)) * np.where(weekday >= 5, WEEKEND_FACTOR, 1.0)
    return rng.multinomial(config.n_events, weight / weight.sum())


# ---------------------------------------------------------------------------------------------- one day


@dataclass
class DayEvents:
    """One day's events as parallel arrays, sorted by ts; sessions numbered 0..n_sessions-1 within the day."""

    user: np.ndarray  # int user index
    item: np.ndarray  # internal item index
    event_type: np.ndarray  # int8 index into EVENT_TYPES
    value: np.ndarray  # float64, NaN = no value
    ts_us: np.ndarray  # int64 microseconds since epoch, UTC
    session: np.ndarray  # int64 session number within the day
    n_sessions: int

    def __len__(self) -> int:
        return len(self.ts_us)


def _sample_cumulative(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index drawn from each row of row-wise cumulative weights `cum`, with uniforms `u` in [0, 1)."""
    target = u * cum[:, -1]
    return np.minimum((cum <= target[:, None]).sum(axis=1), cum.shape[1] - 1)


def _sample_in_categories(cum: np.ndarray, bounds: np.ndarray, cats: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Item index drawn within each category of `cats`, from global cumulative item weights `cum`."""
    lo, hi = bounds[cats], bounds[cats + 1]
    base = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
    total = cum[hi - 1] - base
    idx = np.searchsorted(cum, base + u * total, side="right")
    return np.clip(idx, lo, hi - 1)


def _within_group_offsets(gaps: np.ndarray, group_start: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Cumulative sum of `gaps` restarting at each group (gaps at group starts are taken as 0)."""
    gaps = gaps.copy()
    gaps[group_start] = 0
    total = np.cumsum(gaps)
    return total - total[group_start][group]


def _expected_events_per_session(config: GeneratorConfig) -> float:
    # clicks run above click_rate (sessions favour liked categories); this only sizes batches
    click = min(0.95, 1.6 * config.click_rate)
    funnel = 1 + click * (1 + config.cart_rate * (1 + config.purchase_rate * (1 + config.rating_rate)))
    return config.session_views * funnel


def _simulate_sessions(
    world: World,
    config: GeneratorConfig,
    rng: np.random.Generator,
    n_sessions: int,
    day_start: int,
    user_cum: np.ndarray,
    item_cum: np.ndarray,
) -> DayEvents:
    k = config.n_categories
    # who, when, with which intent
    user = np.searchsorted(user_cum, rng.random(n_sessions) * user_cum[-1], side="right")
    user = np.minimum(user, len(user_cum) - 1)
    hour_cum = np.cumsum(HOUR_PROFILE)
    hour = np.searchsorted(hour_cum, rng.random(n_sessions) * hour_cum[-1], side="right")
    t0 = day_start + hour * 3_600 * US_PER_S + rng.integers(0, 3_600 * US_PER_S, size=n_sessions)
    w = (config.drift * (t0 - config.start_us) / (config.days * US_PER_DAY)).astype(np.float32)[:, None]
    taste = (1 - w) * world.taste_start[user] + w * world.taste_end[user]  # the user's taste right now
    taste_cum = np.cumsum(taste, axis=1)
    intent = _sample_cumulative(taste_cum, rng.random(n_sessions))

    # views: mostly of the intent category, the rest wherever the user's taste leads
    n_views = np.minimum(rng.geometric(1.0 / config.session_views, size=n_sessions), 60)
    view_session = np.repeat(np.arange(n_sessions), n_views)
    n_v = len(view_session)
    view_cat = intent[view_session]
    strays = np.flatnonzero(rng.random(n_v) >= config.session_focus)
    if len(strays):
        view_cat[strays] = _sample_cumulative(taste_cum[view_session[strays]], rng.random(len(strays)))
    item = _sample_in_categories(item_cum, world.category_bounds, view_cat, rng.random(n_v))
    session_first_view = np.concatenate(([0], np.cumsum(n_views)[:-1]))
    view_gap = (rng.lognormal(math.log(25.0), 0.9, size=n_v) * US_PER_S).astype(np.int64) + US_PER_S
    view_ts = t0[view_session] + _within_group_offsets(view_gap, session_first_view, view_session)

    # funnel: affinity (taste relative to uniform) and quality raise conversion and ratings
    log_affinity = np.log(taste[view_session, view_cat] * k + 1e-3)
    quality = world.item_quality[item]
    p_click = 1 / (1 + np.exp(-(_logit(config.click_rate) + 0.7 * log_affinity + 0.35 * quality)))
    click = rng.random(n_v) < p_click
    p_cart = 1 / (1 + np.exp(-(_logit(config.cart_rate) + 0.3 * quality)))
    cart = click & (rng.random(n_v) < p_cart)
    purchase = cart & (rng.random(n_v) < config.purchase_rate)
    rating = purchase & (rng.random(n_v) < config.rating_rate)
    rating_value = np.clip(
        np.round(3.2 + 0.6 * log_affinity + 0.5 * quality + 0.8 * rng.standard_normal(n_v)), 1.0, 5.0
    )

    # one event per funnel step reached; a view's events are consecutive, in funnel order
    steps = 1 + click.astype(np.int64) + cart + purchase + rating
    ev_view = np.repeat(np.arange(n_v), steps)
    view_first_event = np.concatenate(([0], np.cumsum(steps)[:-1]))
    pos = np.arange(len(ev_view)) - view_first_event[ev_view]
    step_gap = ((_STEP_MIN_S[pos] + rng.exponential(1.0, size=len(pos)) * _STEP_MEAN_S[pos]) * US_PER_S).astype(
        np.int64
    )
    ts = view_ts[ev_view] + _within_group_offsets(step_gap, view_first_event, ev_view)
    ev_item = item[ev_view]
    value = np.full(len(pos), np.nan)
    priced = (pos == 2) | (pos == 3)
    value[priced] = world.item_price[ev_item[priced]]
    rated = pos == 4
    value[rated] = rating_value[ev_view[rated]]
    return DayEvents(
        user=user[view_session[ev_view]],
        item=ev_item,
        event_type=_FUNNEL_CODES[pos],
        value=value,
        ts_us=ts,
        session=view_session[ev_view].astype(np.int64),
        n_sessions=n_sessions,
    )


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _take(ev: DayEvents, n: int) -> DayEvents:
    """The first n events (in session order: a prefix keeps every session's funnel consistent)."""
    session = ev.session[:n]
    return DayEvents(
        ev.user[:n], ev.item[:n], ev.event_type[:n], ev.value[:n], ev.ts_us[:n], session,
        int(session[-1]) + 1 if n else 0,
    )  # fmt: skip


def day_weights(world: World, config: GeneratorConfig, day_start: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative session weights of users (signed up before the day) and items (on offer, with novelty)."""
    user_w = np.where(world.user_signup_us < day_start, world.user_activity, 0.0)
    age_days = (day_start - world.item_created_us) / US_PER_DAY
    on_offer = world.item_created_us < day_start
    novelty = 1.0 + config.novelty_boost * np.exp(-np.maximum(age_days, 0.0) / 7.0)
    item_w = np.where(on_offer, world.item_popularity * novelty, 0.0)
    return np.cumsum(user_w), np.cumsum(item_w)


def simulate_day(world: World, config: GeneratorConfig, day: int, n_events: int) -> DayEvents:
    """Exactly `n_events` events for day `day` of the period (0-based), sorted by ts.

    Sessions that would run past the end of the period are moved earlier so every ts is in
    [start, start + days). Deterministic given (seed, day, n_events).
    """
    rng = _seed_sequence(config, 2, day)
    day_start = config.start_us + day * US_PER_DAY
    user_cum, item_cum = day_weights(world, config, day_start)
    if n_events <= 0 or user_cum[-1] <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return DayEvents(empty, empty, empty.astype(np.int8), empty.astype(float), empty, empty, 0)
    per_session = _expected_events_per_session(config)
    parts: list[DayEvents] = []
    remaining, session_base = n_events, 0
    while remaining > 0:
        batch = _simulate_sessions(
            world, config, rng, int(remaining / per_session * 1.1) + 8, day_start, user_cum, item_cum
        )
        if len(batch) > remaining:
            batch = _take(batch, remaining)
        batch.session += session_base
        session_base += batch.n_sessions
        remaining -= len(batch)
        parts.append(batch)
    ev = DayEvents(
        *(np.concatenate([getattr(p, name) for p in parts]) for name in ("user", "item", "event_type", "value")),
        ts_us=np.concatenate([p.ts_us for p in parts]),
        session=np.concatenate([p.session for p in parts]),
        n_sessions=session_base,
    )
    # keep the period's bounds: shift sessions that overrun the end back, wholesale
    last_allowed = config.end_us - 1
    if ev.ts_us.max() > last_allowed:
        session_end = np.full(ev.n_sessions, np.iinfo(np.int64).min)
        np.maximum.at(session_end, ev.session, ev.ts_us)
        overrun = np.maximum(session_end - last_allowed, 0)
        ev.ts_us = np.maximum(ev.ts_us - overrun[ev.session], config.start_us)
    order = np.argsort(ev.ts_us, kind="stable")
    return DayEvents(
        ev.user[order], ev.item[order], ev.event_type[order], ev.value[order], ev.ts_us[order],
        ev.session[order], ev.n_sessions,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- to tables


def events_table(world: World, ev: DayEvents, first_event: int, first_session: int) -> pa.Table:
    """A day's events as an EVENT_SCHEMA table; event and session ids continue from the given numbers."""
    n = len(ev)
    return pa.Table.from_arrays(
        [
            _prefixed_ids("e", np.arange(first_event, first_event + n), 12),
            world.user_ids.take(pa.array(ev.user)),
            world.item_ids.take(pa.array(ev.item)),
            pa.array(EVENT_TYPES, type=pa.string()).take(pa.array(ev.event_type)),
            pa.array(ev.value, type=pa.float64(), mask=np.isnan(ev.value)),
            pa.array(ev.ts_us, type=pa.int64()).cast(TS_TYPE),
            _prefixed_ids("s", first_session + ev.session, 10),
        ],
        schema=EVENT_SCHEMA,
    )


def items_table(world: World) -> pa.Table:
    """The catalogue in item_id order (ITEM_SCHEMA)."""
    order = pa.array(np.argsort(world.item_number))
    names = pa.array(world.category_names, type=pa.string())
    category = names.take(pa.array(world.item_category))
    rank_in_category = np.arange(len(world.item_category)) - world.category_bounds[world.item_category]
    title = pc.binary_join_element_wise(
        pc.utf8_capitalize(category), " no. ", pc.cast(pa.array(rank_in_category + 1), pa.string()), ""
    )
    table = pa.Table.from_arrays(
        [
            world.item_ids,
            category,
            pa.array(world.item_price, type=pa.float64()),
            pa.array(world.item_created_us, type=pa.int64()).cast(TS_TYPE),
            title,
        ],
        schema=ITEM_SCHEMA,
    )
    return table.take(order)


def users_table(world: World) -> pa.Table:
    """All users in user_id order (USER_SCHEMA); some may have no events (signed up late, or quiet)."""
    return pa.Table.from_arrays(
        [world.user_ids, pa.array(world.user_signup_us, type=pa.int64()).cast(TS_TYPE)], schema=USER_SCHEMA
    )


def _iso_us(micros: int) -> str:
    return format_ts(datetime.fromtimestamp(micros // US_PER_S, tz=UTC).replace(microsecond=micros % US_PER_S))


def generate_dataset(config: GeneratorConfig, out_dir: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Generate a dataset into `out_dir` (replacing any dataset there) and return its metadata.

    Works day by day, so memory is bounded by one day of events; `progress(done_events, total_events)`
    is called after each day.
    """
    out_dir = Path(out_dir)
    reset_dataset_dir(out_dir)
    world = build_world(config)
    counts = daily_event_counts(config)
    done = sessions = 0
    users_seen = np.zeros(config.n_users, dtype=bool)
    items_seen = np.zeros(config.n_items, dtype=bool)
    type_counts = np.zeros(len(EVENT_TYPES), dtype=np.int64)
    first_ts, last_ts = None, None
    if progress:
        progress(0, config.n_events)
    for day in range(config.days):
        ev = simulate_day(world, config, day, int(counts[day]))
        if len(ev):
            write_events_partitioned(events_table(world, ev, done, sessions), out_dir, part=f"{day:05d}")
            users_seen[ev.user] = True
            items_seen[ev.item] = True
            type_counts += np.bincount(ev.event_type, minlength=len(EVENT_TYPES))
            lo, hi = int(ev.ts_us[0]), int(ev.ts_us[-1])
            first_ts = lo if first_ts is None else min(first_ts, lo)
            last_ts = hi if last_ts is None else max(last_ts, hi)
        done += len(ev)
        sessions += ev.n_sessions
        if progress:
            progress(done, config.n_events)
    write_table(items_table(world), items_path(out_dir))
    write_table(users_table(world), users_path(out_dir))
    metadata: dict[str, Any] = {
        "source": "generate",
        "seed": config.seed,
        "counts": {
            "events": done,
            "users": config.n_users,
            "items": config.n_items,
            "active_users": int(users_seen.sum()),
            "active_items": int(items_seen.sum()),
            "sessions": sessions,
        },
        "event_types": {t: int(c) for t, c in zip(EVENT_TYPES, type_counts, strict=True)},
        "first_ts": _iso_us(first_ts) if first_ts is not None else None,
        "last_ts": _iso_us(last_ts) if last_ts is not None else None,
        "categories": world.category_names,
        "params": config.params(),
    }
    write_metadata(out_dir, metadata)
    return metadata
