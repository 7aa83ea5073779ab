"""A zoo of signal kinds for the synthetic generator: each kind plants one clip-level quantity into one or two
channels of a clip and returns that quantity as written, so a trait can follow any kind. prepare.py --kinds gives
each trait one kind; every clip carries all five, on channels of their own, over a background of smooth noise.

Each SignalKind has one interface: plant(rng, x, channels, value) adds the kind's pattern for a clip whose latent
value is in [0, 1] (a person's tendency plus a little clip jitter) to x (T, 22) in place, and returns the noise-free
signal read off the written frames. Where the pattern is not a level, the channel's mean and variance do not
depend on the value (equal marginals), so clip means and stds cannot read it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.signal import lfilter

from openface import AU_COLUMNS, FEATURE_COLUMNS, GAZE_COLUMNS, HEAD_COLUMNS

FPS = 30
AU_CHANNELS = tuple(FEATURE_COLUMNS.index(c) for c in AU_COLUMNS)  # the first columns of FEATURE_COLUMNS
GAZE_CHANNELS = tuple(FEATURE_COLUMNS.index(c) for c in GAZE_COLUMNS)
HEAD_CHANNELS = tuple(FEATURE_COLUMNS.index(c) for c in HEAD_COLUMNS)
BURST = 10  # frames of one burst or event


def smooth_noise(rng: np.random.Generator, n: int, rho: float, sd: float) -> np.ndarray:
    """AR(1) noise with lag-one correlation rho and stationary standard deviation sd."""
    return lfilter([np.sqrt(1 - rho ** 2) * sd], [1, -rho], rng.standard_normal(n))


def standardised(values: np.ndarray, sd: float = 1.0) -> np.ndarray:
    """values centred and scaled to standard deviation sd (a constant stays at 0)."""
    return sd * (values - values.mean()) / max(values.std(), 1e-9)


def bump(length: int) -> np.ndarray:
    """A raised-cosine event shape of `length` frames peaking at 1."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(length) + 0.5) / length)


def add_event(track: np.ndarray, start: int, shape: np.ndarray, amplitude: float) -> None:
    """Add amplitude * shape to the track from frame `start`, cut at the track's end."""
    stop = min(len(track), start + len(shape))
    if 0 <= start < stop:
        track[start:stop] += amplitude * shape[: stop - start]


def burst_track(n: int, starts) -> np.ndarray:
    """A track of n frames with a BURST-frame raised-cosine burst of height 1 from each start frame (cut at the end)."""
    track = np.zeros(n)
    for at in starts:
        add_event(track, int(at), bump(BURST), 1.0)
    return track


def spaced_starts(rng: np.random.Generator, n: int, count: int, gap: int) -> np.ndarray:
    """`count` start frames at least `gap` apart within [0, n - gap)."""
    slots = max(1, (n - gap) // gap)
    chosen = np.sort(rng.choice(slots, size=min(count, slots), replace=False))
    return chosen * gap + rng.integers(0, max(1, gap // 4), len(chosen))


def covering(holds: np.ndarray, n: int) -> np.ndarray:
    """The leading hold lengths whose sum first reaches n frames (all of them if it never does)."""
    return holds[: int(np.searchsorted(np.cumsum(holds), n)) + 1]


def level(rng, x, ch, value):
    x[:, ch[0]] += 2.0 * value
    return float(x[:, ch[0]].mean())


def spread(rng, x, ch, value):
    x[:, ch[0]] += smooth_noise(rng, len(x), 0.9, 0.2 + 0.8 * value)
    return float(x[:, ch[0]].std())


def inverted_u(rng, x, ch, value):
    mean = level(rng, x, ch, value)
    return -(mean - 2.5) ** 2  # the background level is about 1.5, so the mean runs from 1.5 to 3.5


def threshold(rng, x, ch, value):
    return max(0.0, level(rng, x, ch, value) - 2.7)


def co_occurrence(rng, x, ch, value):
    """Bursts of two AUs, as many in every clip; a share `value` of the second's come at the first's frames."""
    n, count = len(x), max(2, len(x) // 60)
    first = spaced_starts(rng, n, count, 2 * BURST)
    together = rng.random(len(first)) < value
    alone = spaced_starts(rng, n, len(first), 2 * BURST)
    for at, same, other in zip(first, together, alone):
        add_event(x[:, ch[0]], int(at), bump(BURST), 1.5)
        add_event(x[:, ch[1]], int(at if same else other), bump(BURST), 1.5)
    return float(together.mean())


def order(rng, x, ch, value):
    """Pairs of bursts 20 frames apart: a share `value` run first channel then second, the others the other way."""
    starts = spaced_starts(rng, len(x), max(2, len(x) // 90), 60)
    follows = rng.random(len(starts)) < value
    for at, forward in zip(starts, follows):
        a, b = (ch[0], ch[1]) if forward else (ch[1], ch[0])
        add_event(x[:, a], int(at), bump(BURST), 1.5)
        add_event(x[:, b], int(at) + 20, bump(BURST), 1.5)
    return float(follows.mean())


def lead_lag(rng, x, ch, value):
    """One slow movement in two channels, the second 8 frames after the first, or 8 before: which leads."""
    leads = rng.random() < value
    shared = smooth_noise(rng, len(x) + 16, 0.95, 0.5)
    x[:, ch[0]] += shared[8: 8 + len(x)]
    x[:, ch[1]] += shared[:len(x)] if leads else shared[16:]
    return float(leads)


def slow_delay(rng, x, ch, value):
    """Events in one channel answered in another 1-4 s later."""
    delay = int(round(FPS * (1 + 3 * value)))
    starts = spaced_starts(rng, len(x), max(1, len(x) // 180), 180)
    answered = [int(at) for at in starts if at + delay + BURST <= len(x)]
    for at in starts:
        add_event(x[:, ch[0]], int(at), bump(BURST), 2.0)
    for at in answered:
        add_event(x[:, ch[1]], at + delay, bump(BURST), 2.0)
    return float(delay) if answered else float("nan")


def jerkiness(rng, x, ch, value):
    """A head angle's lag-one correlation (0.5 smooth-ish to 0.95 smooth) at one variance."""
    rho = 0.95 - 0.45 * value
    part = smooth_noise(rng, len(x), rho, 0.08)
    x[:, ch[0]] += part
    return float(1 - np.corrcoef(part[:-1], part[1:])[0, 1])


def rhythm(rng, x, ch, value):
    """An oscillation of 0.3-1.5 Hz at one amplitude."""
    hertz = 0.3 + 1.2 * value
    t = np.arange(len(x)) / FPS
    x[:, ch[0]] += 0.6 * np.sin(2 * np.pi * hertz * t + rng.uniform(0, 2 * np.pi))
    return hertz


def burst_duration(rng, x, ch, value):
    """Bursts covering a third of the clip: long and few, or short and many (the same mean)."""
    duration = int(round(6 + 30 * value))
    count = max(1, int(round(len(x) / 3 / duration)))
    for at in spaced_starts(rng, len(x), count, max(duration + 2, len(x) // (count + 1))):
        x[int(at): int(at) + duration, ch[0]] += 1.5
    return float(duration)


def trend(rng, x, ch, value):
    """A drift from the clip's start to its end, up or down, about one mean."""
    slope = 2.0 * value - 1.0
    x[:, ch[0]] += slope * (np.linspace(-1, 1, len(x)))
    return slope


def rare_events(rng, x, ch, value):
    """How many large, brief spikes (a Poisson count with mean 0-3)."""
    count = rng.poisson(3 * value)
    for at in rng.integers(0, len(x) - BURST, count):
        add_event(x[:, ch[0]], int(at), bump(BURST), 3.0)
    return float(count)


def skew(rng, x, ch, value):
    """Brief large rises over a slow sag (skewed) or a symmetric wobble, at one mean and variance."""
    wobble = smooth_noise(rng, len(x), 0.8, 1.0)
    rises = np.exp(wobble)
    mixed = (1 - value) * wobble + standardised(rises, value)
    part = standardised(mixed, 0.4)
    x[:, ch[0]] += part
    low, middle, high = np.quantile(part, [0.25, 0.5, 0.75])
    return float((high + low - 2 * middle) / (high - low))  # Bowley's quartile skewness, within [-1, 1]


def peak_time(rng, x, ch, value):
    """One large slow event, at a share `value` of the way through the clip."""
    width = 3 * BURST
    at = int(round(value * (len(x) - width)))
    add_event(x[:, ch[0]], at, bump(width), 1.5)
    return (at + width / 2) / len(x)


def synchrony(rng, x, ch, value):
    """Two head angles' slow movements sharing a part `value` of their variance, at one variance each."""
    shared = smooth_noise(rng, len(x), 0.95, 1.0)
    parts = [np.sqrt(value) * shared + np.sqrt(1 - value) * smooth_noise(rng, len(x), 0.95, 1.0) for _ in ch]
    parts = [standardised(p, 0.06) for p in parts]
    for c, part in zip(ch, parts):
        x[:, c] += part
    return float(np.corrcoef(parts[0], parts[1])[0, 1])


def tremor(rng, x, ch, value):
    """A 5-7 Hz oscillation carrying a share `value` of a head angle's movement, at one variance."""
    t = np.arange(len(x)) / FPS
    fast = np.sin(2 * np.pi * rng.uniform(5, 7) * t + rng.uniform(0, 2 * np.pi))
    slow = smooth_noise(rng, len(x), 0.95, 1.0)
    fast, slow = [standardised(p) for p in (fast, slow)]
    x[:, ch[0]] += 0.06 * (np.sqrt(value) * fast + np.sqrt(1 - value) * slow)
    return float(value)


def envelope(rng, x, ch, value):
    """One AU's movement bunched into active and calm stretches (a slowly varying amplitude), at one variance."""
    amplitude = np.exp(1.5 * value * smooth_noise(rng, len(x), 0.99, 1.0))
    part = amplitude * smooth_noise(rng, len(x), 0.7, 1.0)
    x[:, ch[0]] += standardised(part, 0.3)
    return float(amplitude.std() / amplitude.mean())


def onset(rng, x, ch, value):
    """Events that rise fast and fade slowly, or rise slowly and end fast (one shape reversed in time): the same
    values, hence one mean and variance, and one spectrum."""
    rise = int(round(3 + 18 * value))
    shape = np.r_[np.arange(1, rise + 1) / rise, np.arange(24 - rise - 1, -1, -1) / (24 - rise)]  # 24 frames
    for at in spaced_starts(rng, len(x), max(2, len(x) // 60), 40):
        add_event(x[:, ch[0]], int(at), shape, 1.5)
    return (2 * rise - 24) / 24


def regularity(rng, x, ch, value):
    """Bursts at random times, or evenly spaced (a share `value` of the way from one to the other), at one count."""
    count = max(3, len(x) // 45)
    span = len(x) - BURST
    spacing = span / count
    regular = rng.uniform(0, spacing) + spacing * np.arange(count)
    random = np.sort(rng.uniform(0, span, count))
    starts = np.round(value * regular + (1 - value) * random).astype(int)
    for at in starts:
        add_event(x[:, ch[0]], int(at), bump(BURST), 1.5)
    gaps = np.diff(starts)
    return float(1 - gaps.std() / gaps.mean())


def bimodality(rng, x, ch, value):
    """One AU switching between two levels (a share `value` of its movement) over a slow wander, at one mean and
    variance: its values have two modes or one."""
    dwell = rng.integers(30, 91, len(x) // 30 + 1)  # 1-3 s in each state, in turn
    states = np.repeat(np.resize([1.0, -1.0], len(dwell)), dwell)[:len(x)] * rng.choice([-1.0, 1.0])
    states = np.convolve(states, np.ones(5) / 5, "same")  # a few frames to change state
    wander = smooth_noise(rng, len(x), 0.8, 1.0)
    states, wander = [standardised(p) for p in (states, wander)]
    part = np.sqrt(value) * states + np.sqrt(1 - value) * wander
    part = standardised(part, 0.4)
    x[:, ch[0]] += part
    return float((3 - np.mean(part ** 4) / np.mean(part ** 2) ** 2) / 2)  # 0 for a Gaussian, 1 for two levels


def amplitude_coupling(rng, x, ch, value):
    """A second AU that moves more while a first is high (and less while it is low), at one variance each."""
    slow = smooth_noise(rng, len(x), 0.98, 1.0)
    slow = standardised(slow)
    fast = np.exp(1.2 * value * slow) * smooth_noise(rng, len(x), 0.7, 1.0)
    x[:, ch[0]] += 0.3 * slow
    x[:, ch[1]] += standardised(fast, 0.3)
    return float(np.corrcoef(slow, np.abs(fast))[0, 1])


def stillness(rng, x, ch, value):
    """A head angle held still in stretches of 1-3 s covering a share 0.6 * `value` of the clip, moving in between,
    at one variance."""
    moving = smooth_noise(rng, len(x), 0.95, 1.0)
    part, held, at = moving.copy(), np.zeros(len(x), bool), 0
    while at < len(x):
        stretch = int(rng.integers(30, 91))
        if rng.random() < 0.6 * value:
            part[at: at + stretch] = part[at]
            held[at: at + stretch] = True
        at += stretch
    x[:, ch[0]] += standardised(part, 0.06)
    return float(held.mean())


def interaction(rng, x, ch, value):
    """Two AUs' levels whose product carries the value: the first sits high or low at random, the second on the
    same side by 2 * value - 1 of its range, so neither mean alone says anything."""
    side = rng.choice([-1.0, 1.0])
    first, second = 0.8 * side, 0.8 * side * (2 * value - 1)
    x[:, ch[0]] += first
    x[:, ch[1]] += second
    return first * second


def chirp(rng, x, ch, value):
    """An oscillation of one AU that speeds up over the clip or slows down (0.4-1.2 Hz and back), at one amplitude
    and one mean frequency: one spectrum for a sweep up and the same sweep down."""
    sweep = 2 * value - 1
    t = np.arange(len(x)) / FPS
    hertz = 0.8 + 0.4 * sweep * (2 * t / max(t[-1], 1e-9) - 1)
    x[:, ch[0]] += 0.6 * np.sin(2 * np.pi * np.cumsum(hertz) / FPS + rng.uniform(0, 2 * np.pi))
    return float(sweep)


def spread_trend(rng, x, ch, value):
    """One AU's movement growing over the clip or fading, at one variance."""
    sweep = 2 * value - 1
    amplitude = 1 + 0.8 * sweep * np.linspace(-1, 1, len(x))
    part = amplitude * smooth_noise(rng, len(x), 0.7, 1.0)
    x[:, ch[0]] += standardised(part, 0.3)
    return float(sweep)


def tails(rng, x, ch, value):
    """A head angle moving in a few large turns either way among small movements, or in even moderate ones (a share
    `value` of its movement in the turns), at one variance: heavy tails against light."""
    turns = np.zeros(len(x))
    for at in rng.integers(0, max(1, len(x) - 3 * BURST), max(1, len(x) // 120)):
        add_event(turns, int(at), bump(3 * BURST), rng.choice([-1.0, 1.0]))
    even = smooth_noise(rng, len(x), 0.9, 1.0)
    turns, even = [standardised(p) for p in (turns, even)]
    part = np.sqrt(value) * turns + np.sqrt(1 - value) * even
    part = standardised(part)
    x[:, ch[0]] += 0.06 * part
    return float(np.mean(part ** 4) - 3)  # excess kurtosis


def anti_phase(rng, x, ch, value):
    """Two AUs' slow movements moving together or against each other (correlation -0.9 to 0.9), at one variance
    each."""
    r = 1.8 * value - 0.9
    shared, own = (smooth_noise(rng, len(x), 0.95, 1.0) for _ in range(2))
    parts = [shared, r * shared + np.sqrt(1 - r ** 2) * own]
    parts = [standardised(p, 0.3) for p in parts]
    for c, part in zip(ch, parts):
        x[:, c] += part
    return float(np.corrcoef(parts[0], parts[1])[0, 1])


def jitter(rng, x, ch, value):
    """Events in one AU answered in another about 20 frames later, the delay varying from event to event by a
    standard deviation of 0-12 frames: how consistent the answer's timing is."""
    starts = spaced_starts(rng, len(x), max(2, len(x) // 90), 90)
    delays = np.clip(np.round(20 + 12 * value * rng.standard_normal(len(starts))), 2, 60).astype(int)
    for at, delay in zip(starts, delays):
        add_event(x[:, ch[0]], int(at), bump(BURST), 1.5)
        add_event(x[:, ch[1]], int(at + delay), bump(BURST), 1.5)
    return float(delays.std())


def undershoot(rng, x, ch, value):
    """Bursts of one AU each followed by a dip below its resting level (0-1 of the burst's height), at one count,
    mean and variance: how far it rebounds."""
    part = np.zeros(len(x))
    for at in spaced_starts(rng, len(x), max(2, len(x) // 60), 60):
        add_event(part, int(at), bump(BURST), 1.0)
        add_event(part, int(at) + BURST, bump(2 * BURST), -value)
    x[:, ch[0]] += standardised(part, 0.5)
    return float(value)


def step(rng, x, ch, value):
    """One AU's movement as a single lasting change of level at a random moment, up or down, against a slow wander
    (a share `value` of its movement in the step), at one mean and variance."""
    at = int(rng.uniform(0.2, 0.8) * len(x))
    change = np.where(np.arange(len(x)) < at, 0.0, rng.choice([-1.0, 1.0]))
    wander = smooth_noise(rng, len(x), 0.9, 1.0)
    change, wander = [standardised(p) for p in (change, wander)]
    part = np.sqrt(value) * change + np.sqrt(1 - value) * wander
    x[:, ch[0]] += standardised(part, 0.4)
    return float(value)


def motif(rng, x, ch, value):
    """One AU's 1-s events: a share `value` of them repeat one shape of the clip's own, the others each a shape of
    their own drawn alike, at one count: how repetitive the movement is."""
    def shape() -> np.ndarray:
        s = smooth_noise(rng, 3 * BURST, 0.8, 1.0) * bump(3 * BURST)
        return s / np.abs(s).max()
    repeated = shape()
    starts = spaced_starts(rng, len(x), max(3, len(x) // 60), 45)
    repeats = rng.random(len(starts)) < value
    for at, again in zip(starts, repeats):
        add_event(x[:, ch[0]], int(at), repeated if again else shape(), 1.2)
    return float(repeats.mean())


def coupling_change(rng, x, ch, value):
    """Two AUs' slow movements going together in one half of the clip and against each other in the other
    (correlation +-0.9 `value`, which half at random), at one variance each: over the whole clip they are unrelated."""
    half = len(x) // 2
    r = 0.9 * value * rng.choice([-1.0, 1.0]) * np.where(np.arange(len(x)) < half, 1.0, -1.0)  # (T,)
    shared, own = (smooth_noise(rng, len(x), 0.95, 1.0) for _ in range(2))
    parts = [shared, r * shared + np.sqrt(1 - r ** 2) * own]
    parts = [standardised(p, 0.3) for p in parts]
    for c, part in zip(ch, parts):
        x[:, c] += part
    first, second = (np.corrcoef(parts[0][s], parts[1][s])[0, 1] for s in (slice(0, half), slice(half, None)))
    return float(abs(first - second) / 2)


def echo(rng, x, ch, value):
    """A head angle's movements repeated by itself about 1 s (25-35 frames) later at a gain 0.9 `value`, at one
    variance: how much it goes back over what it just did."""
    lag = int(rng.integers(25, 36))
    drive = smooth_noise(rng, len(x) + lag, 0.8, 1.0)
    part = drive[lag:] + 0.9 * value * drive[:-lag]
    part = standardised(part)
    x[:, ch[0]] += 0.1 * part
    return float(np.corrcoef(part[lag:], part[:-lag])[0, 1])


def height_spread(rng, x, ch, value):
    """One AU's bursts at one count, their heights alike or varying (coefficient of variation 0.8 `value`), at one
    mean and variance: how unequal its expressions are."""
    part = np.zeros(len(x))
    starts = spaced_starts(rng, len(x), max(3, len(x) // 40), 30)
    heights = np.clip(1 + 0.8 * value * rng.standard_normal(len(starts)), 0.05, None)
    for at, height in zip(starts, heights):
        add_event(part, int(at), bump(BURST), float(height))
    x[:, ch[0]] += standardised(part, 0.5)
    return float(heights.std() / heights.mean())


def plateau(rng, x, ch, value):
    """One AU's 20-frame events, peaked (a raised cosine) or flat-topped (held at their height between a fast rise
    and fall, a share `value` of the way from one to the other), at one count, mean and variance: how long an
    expression is held at its peak."""
    frames = 2 * BURST
    flat = np.clip(np.minimum(np.arange(frames) + 1, frames - np.arange(frames)) / 3, 0, 1)
    shape = (1 - value) * bump(frames) + value * flat
    part = np.zeros(len(x))
    for at in spaced_starts(rng, len(x), max(3, len(x) // 50), 40):
        add_event(part, int(at), shape, 1.0)
    x[:, ch[0]] += standardised(part, 0.5)
    return float(value)


def frequency_ratio(rng, x, ch, value):
    """Oscillations of two AUs, the second at 1 to 2 times the first's frequency (1 + `value`; the first at
    0.3-0.7 Hz), at one amplitude each: neither AU's own spectrum says the ratio."""
    t = np.arange(len(x)) / FPS
    base = rng.uniform(0.3, 0.7)
    for c, hz in zip(ch, (base, base * (1 + value))):
        x[:, c] += 0.3 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi))
    return float(1 + value)


def duration_spread(rng, x, ch, value):
    """One AU's bursts at one count and one mean duration (15 frames), their durations alike or varying
    (coefficient of variation 0.6 `value`), at one mean and variance: how unequal its expressions' lengths are."""
    part = np.zeros(len(x))
    starts = spaced_starts(rng, len(x), max(3, len(x) // 50), 45)
    durations = np.clip(np.round(15 * (1 + 0.6 * value * rng.standard_normal(len(starts)))), 4, 40).astype(int)
    for at, frames in zip(starts, durations):
        add_event(part, int(at), bump(int(frames)), 1.0)
    x[:, ch[0]] += standardised(part, 0.5)
    return float(durations.std() / durations.mean())


def clustering(rng, x, ch, value):
    """One AU's bursts at one count, each after the first coming 12-30 frames after the one before with chance
    `value` and at a random time otherwise, at one mean and variance: whether its expressions come in bouts."""
    count = max(4, len(x) // 60)
    starts, clustered = [int(rng.integers(0, len(x) - BURST))], rng.random(count - 1) < value
    for follows in clustered:
        near = starts[-1] + int(rng.integers(12, 31))
        starts.append(near if follows and near < len(x) - BURST else int(rng.integers(0, len(x) - BURST)))
    x[:, ch[0]] += standardised(burst_track(len(x), starts), 0.5)
    return float(clustered.mean())


def spectral_slope(rng, x, ch, value):
    """A head angle's movement with power falling as frequency^-beta, beta from 0.5 to 2 (0.5 + 1.5 `value`), at one
    variance: how much of it is slow drift against fast change, over every time scale at once."""
    spectrum = np.fft.rfft(rng.standard_normal(len(x)))
    hz = np.fft.rfftfreq(len(x), 1 / FPS)
    beta = 0.5 + 1.5 * value
    spectrum[1:] *= hz[1:] ** (-beta / 2)
    spectrum[0] = 0
    part = np.fft.irfft(spectrum, len(x))
    x[:, ch[0]] += standardised(part, 0.1)
    return float(beta)


def rate_trend(rng, x, ch, value):
    """One AU's bursts at one count, a share 0.5 + 0.4 `value` of them in the clip's second half, at one mean and
    variance: whether its expressions become more frequent as the clip goes on."""
    count, half = max(4, len(x) // 50), len(x) // 2
    late = rng.permutation(count) < round(count * (0.5 + 0.4 * value))
    starts = np.where(late, rng.integers(half, len(x) - BURST, count), rng.integers(0, half - BURST, count))
    x[:, ch[0]] += standardised(burst_track(len(x), starts), 0.5)
    return float(late.mean())


def phase_offset(rng, x, ch, value):
    """Two AUs oscillating at one shared frequency (0.3-0.8 Hz), the second behind the first by a phase of pi
    `value` (in step to opposite), at one amplitude each: how far apart in their cycle two expressions run."""
    t = np.arange(len(x)) / FPS
    hz, start = rng.uniform(0.3, 0.8), rng.uniform(0, 2 * np.pi)
    for c, lag in zip(ch, (0.0, np.pi * value)):
        x[:, c] += 0.3 * np.sin(2 * np.pi * hz * t + start - lag)
    return float(np.pi * value)


def height_duration(rng, x, ch, value):
    """One AU's bursts at one count, with one set of heights (0.5-1.5) and one of durations (6-30 frames), the
    taller ones the longer with rank correlation 2 `value` - 1 (a share of the pairs matched in order, reversed below
    `value` 0.5, the rest at random), at one mean and variance: whether its stronger expressions last longer."""
    count = max(4, len(x) // 50)
    heights, durations = np.linspace(0.5, 1.5, count), np.linspace(6, 30, count).round().astype(int)
    target = 2 * value - 1
    ranks = np.arange(count) if target >= 0 else np.arange(count - 1, -1, -1)  # the duration of each height
    loose = rng.random(count) >= abs(target)
    ranks[loose] = rng.permutation(ranks[loose])
    part = np.zeros(len(x))
    for at, k in zip(spaced_starts(rng, len(x), count, min(40, len(x) // (count + 1))), rng.permutation(count)):
        add_event(part, int(at), bump(int(durations[ranks[k]])), heights[k])
    x[:, ch[0]] += standardised(part, 0.5)
    return float(np.corrcoef(heights, durations[ranks])[0, 1])


def bandwidth(rng, x, ch, value):
    """One AU oscillating in a band about a centre frequency (0.4-0.9 Hz, per clip) 0.02 Hz wide (a steady rhythm)
    to 0.6 Hz wide (0.02 + 0.58 `value`: a wandering one), at one amplitude: how regular its rhythm is."""
    spectrum = np.fft.rfft(rng.standard_normal(len(x)))
    hz = np.fft.rfftfreq(len(x), 1 / FPS)
    width = 0.02 + 0.58 * value
    spectrum *= np.exp(-0.5 * ((hz - rng.uniform(0.4, 0.9)) / (width / 2)) ** 2)
    x[:, ch[0]] += standardised(np.fft.irfft(spectrum, len(x)), 0.3)
    return float(width)


def self_modulation(rng, x, ch, value):
    """A head angle's slow movement with fast movement on top that grows where the slow position is high (its scale
    1 + 0.9 `value` times the slow position's z-score, at least 0.1), at one variance: how much it moves faster
    where it has turned further."""
    slow = standardised(smooth_noise(rng, len(x), 0.995, 1.0))
    scale = np.maximum(0.1, 1 + 0.9 * value * slow)
    x[:, ch[0]] += standardised(slow + scale * smooth_noise(rng, len(x), 0.3, 0.7), 0.1)
    return float(0.9 * value)


def inhibition(rng, x, ch, value):
    """Two AUs with bursts at one count each; a share `value` of the second's kept out of the 1 s after any of the
    first's, the rest at random times, at one mean and variance each (the share kept out, as written): how much one
    expression holds another back."""
    n, count, quiet = len(x), max(4, len(x) // 45), FPS
    first, second = np.zeros(n), np.zeros(n)
    after = np.zeros(n, bool)
    for at in rng.integers(0, n - BURST, count):
        add_event(first, int(at), bump(BURST), 1.0)
        after[int(at): int(at) + quiet] = True
    free = np.flatnonzero(~after[: n - BURST])
    starts = [int(rng.choice(free)) if keep and len(free) else int(rng.integers(0, n - BURST))
              for keep in rng.random(count) < value]
    for at in starts:
        add_event(second, at, bump(BURST), 1.0)
    for c, part in zip(ch, (first, second)):
        x[:, c] += standardised(part, 0.4)
    return float(np.mean([not after[at] for at in starts]))


def arch(rng, x, ch, value):
    """One AU's slow course over the clip: highest mid-clip (2 `value` - 1 > 0) or at its ends (< 0), a parabola over
    smooth noise that keeps one mean and variance: whether an expression builds and fades or dips mid-clip."""
    bend = 2 * value - 1
    course = standardised(-np.linspace(-1, 1, len(x)) ** 2)
    x[:, ch[0]] += 0.35 * (bend * course + np.sqrt(1 - bend ** 2) * standardised(smooth_noise(rng, len(x), 0.99, 1)))
    return float(bend)


def triad(rng, x, ch, value):
    """Three AUs with bursts at one count each, every pair of them coinciding equally often: each of a set of units
    is, with chance `value`, one burst of all three together and one of each alone, else one burst of each pair
    (two bursts per AU either way), at one mean and variance each (the share of units written as triples): whether
    expressions come three at once, which no pair of them shows."""
    n, units = len(x), max(2, len(x) // 100)
    triple = rng.random(units) < value
    starts = iter(rng.permutation(spaced_starts(rng, n, 4 * units, 2 * BURST)))
    parts = np.zeros((3, n))
    for together in triple:
        groups = [(0, 1, 2), (0,), (1,), (2,)] if together else [(0, 1), (1, 2), (0, 2)]
        for group, at in zip(groups, starts):
            for c in group:
                add_event(parts[c], int(at), bump(BURST), 1.0)
    for c, part in zip(ch, parts):
        x[:, c] += standardised(part, 0.4)
    return float(triple.mean())


def velocity_coupling(rng, x, ch, value):
    """Two head angles, each a slow movement of its own with fast movement on top, the fast parts correlated
    0.9 (2 `value` - 1) (against each other to together) and the slow parts independent, at one variance each: whether
    two angles jolt together while they drift apart."""
    n, rho = len(x), 0.9 * (2 * value - 1)
    shared = smooth_noise(rng, n, 0.3, 1.0)
    for c, fast in zip(ch, (shared, rho * shared + np.sqrt(1 - rho ** 2) * smooth_noise(rng, n, 0.3, 1.0))):
        x[:, c] += standardised(standardised(smooth_noise(rng, n, 0.995, 1.0)) + 0.6 * standardised(fast), 0.1)
    return float(rho)


def ceiling(rng, x, ch, value):
    """One AU's slow wander held flat at a ceiling for a share 0.4 `value` of the clip (cut at that quantile of its
    own course), at one mean and variance: how often an expression is held at its most."""
    course = smooth_noise(rng, len(x), 0.98, 1.0)
    x[:, ch[0]] += standardised(np.minimum(course, np.quantile(course, 1 - 0.4 * value)), 0.4)
    return float(0.4 * value)


def saccades(rng, x, ch, value):
    """A gaze angle whose movement is, for a share `value` of its variance, jumps (sparse, large steps that then
    settle) and for the rest a smooth drift of the same autocorrelation (one spectrum), at one variance: how much the
    eyes move in jumps."""
    rho, n = 0.98, len(x)
    jumps = rng.standard_normal(n) * (rng.random(n) < 0.03)
    jumpy, smooth = lfilter([1], [1, -rho], jumps), smooth_noise(rng, n, rho, 1.0)
    x[:, ch[0]] += 0.1 * (np.sqrt(value) * standardised(jumpy) + np.sqrt(1 - value) * standardised(smooth))
    return float(value)


def habituation(rng, x, ch, value):
    """Events in one AU about every second, each answered by a burst of another 8 frames later or else followed by
    one 16-22 frames later (one burst per event either way), at one mean and variance each; in each quarter of the
    clip a share 0.5 + 0.5 `value` (1 - 2 q / 3) of the events answered (q = 0 .. 3), at random among them: how fast
    a response to an expression wears off (the share answered in the first half less that in the second, as
    written)."""
    n, gap = len(x), FPS
    starts = np.arange(int(rng.integers(0, gap)), n - gap, gap)
    answered = np.zeros(len(starts), bool)
    for q, part in enumerate(np.array_split(np.arange(len(starts)), 4)):
        chosen = rng.permutation(part)[: int(round(len(part) * (0.5 + 0.5 * value * (1 - 2 * q / 3))))]
        answered[chosen] = True
    first, second = np.zeros(n), np.zeros(n)
    for at, answer in zip(starts, answered):
        add_event(first, int(at), bump(BURST), 1.0)
        add_event(second, int(at) + (8 if answer else int(rng.integers(16, 23))), bump(BURST), 1.0)
    for c, part in zip(ch, (first, second)):
        x[:, c] += standardised(part, 0.4)
    half = len(starts) // 2
    return float(answered[:half].mean() - answered[half:].mean())


def answer_gain(rng, x, ch, value):
    """Events in one AU about every 1.5 s at one set of heights (0.3-1.7), each answered 6 frames later by a burst of
    another whose height is, with chance `value`, the event's own and else another event's (the same set of heights
    either way), at one mean and variance each (the correlation of the two heights, as written): whether a stronger
    expression draws a stronger answer."""
    n = len(x)
    starts = spaced_starts(rng, n, max(4, n // 45), 40)
    heights = rng.uniform(0.3, 1.7, len(starts))
    matched = rng.random(len(starts)) < value
    answers = heights.copy()
    answers[~matched] = rng.permutation(heights[~matched])
    first, second = np.zeros(n), np.zeros(n)
    for at, height, answer in zip(starts, heights, answers):
        add_event(first, int(at), bump(BURST), height)
        add_event(second, int(at) + 6, bump(BURST), answer)
    for c, part in zip(ch, (first, second)):
        x[:, c] += standardised(part, 0.4)
    return float(np.corrcoef(heights, answers)[0, 1]) if np.ptp(answers) > 0 else 0.0


def aversion(rng, x, ch, value):
    """An AU's bursts and as many glances away of a gaze angle (out and back over 20 frames, to either side at
    random); a share `value` of the glances start with a burst, the rest at random times, at one mean and variance
    each (the share that start with one, as written): whether the eyes look away while an expression shows."""
    n = len(x)
    starts = spaced_starts(rng, n, max(2, n // 90), 60)
    with_burst = rng.random(len(starts)) < value
    expression, glances = np.zeros(n), np.zeros(n)
    for at, together in zip(starts, with_burst):
        add_event(expression, int(at), bump(BURST), 1.0)
        add_event(glances, int(at) if together else int(rng.integers(0, n - 20)), bump(20), rng.choice((-1.0, 1.0)))
    x[:, ch[0]] += standardised(expression, 0.4)
    x[:, ch[1]] += standardised(glances, 0.1)
    return float(with_burst.mean())


def persistence(rng, x, ch, value):
    """A gaze angle held at one place, then moving to another within 3 frames: fixations of 10 to 60 frames on
    average (10 + 50 `value`, exponential), at one variance (the mean fixation, as written): how long the eyes rest."""
    n, mean_hold = len(x), 10 + 50 * value
    holds = np.maximum(1, np.round(rng.exponential(mean_hold, n)).astype(int))
    holds = covering(holds, n)
    course = np.repeat(rng.standard_normal(len(holds)), holds)[:n]
    x[:, ch[0]] += standardised(np.convolve(course, np.ones(3) / 3, mode="same"), 0.1)
    return float(n / len(holds))


def after_turn(rng, x, ch, value):
    """A head angle turning to a new position every 3 s or so (each turn a smooth step over 8 frames, either way) and
    as many bursts of an AU; a share `value` of the bursts come 10 frames after a turn, the rest at random times, at
    one mean and variance each (the share after a turn, as written): whether an expression follows a turn of the
    head."""
    n = len(x)
    turns = spaced_starts(rng, n, max(2, n // 90), 60)
    steps = np.zeros(n)
    for at in turns:
        add_event(steps, int(at), np.diff(0.5 - 0.5 * np.cos(np.linspace(0, np.pi, 9))), rng.choice((-1.0, 1.0)))
    after = rng.random(len(turns)) < value
    expression = burst_track(n, [int(at) + 10 if follows else int(rng.integers(0, n - BURST))
                                 for at, follows in zip(turns, after)])
    x[:, ch[0]] += standardised(np.cumsum(steps), 0.1)
    x[:, ch[1]] += standardised(expression, 0.4)
    return float(after.mean())


def refractory(rng, x, ch, value):
    """One AU's bursts at random times with one set of heights (0.4-1.6), the taller after the longer pauses with
    rank correlation `value` (heights ordered by the pause before each, blurred by noise as `value` falls), at one
    mean and variance (the correlation of pause and height, as written): whether an expression recovers with time."""
    n = len(x)
    starts = spaced_starts(rng, n, max(4, n // 40), 12)
    pauses = np.diff(starts, prepend=starts[0] - 40).astype(float)
    order = np.argsort(np.argsort(pauses)) / max(1, len(starts) - 1)
    score = value * order + (1 - value) * rng.random(len(starts))
    heights = np.sort(rng.uniform(0.4, 1.6, len(starts)))[np.argsort(np.argsort(score))]
    part = np.zeros(n)
    for at, height in zip(starts, heights):
        add_event(part, int(at), bump(BURST), height)
    x[:, ch[0]] += standardised(part, 0.4)
    return float(np.corrcoef(pauses, heights)[0, 1]) if np.ptp(pauses) > 0 else 0.0


def focus(rng, x, ch, value):
    """Three AUs' slow movements, one of them (at random) taking a share 1/3 + 2/3 `value` of their summed standard
    deviations and the other two the rest equally, at one mean each and one expected standard deviation (the share,
    as written): whether expression is spread over the face or concentrated in one part of it."""
    share = 1 / 3 + 2 / 3 * value
    sds = np.full(3, 0.45 * (1 - share) / 2)
    sds[rng.integers(0, 3)] = 0.45 * share
    for c, sd in zip(ch, sds):
        x[:, c] += standardised(smooth_noise(rng, len(x), 0.97, 1.0), sd)
    return float(share)


def turned_expression(rng, x, ch, value):
    """A head angle's slow wander and an AU whose slow course follows, for a share `value` of its variance, how far
    the head is turned (either way) and for the rest how far another wander is from its centre (one shape of
    distribution), at one mean and variance each (the correlation of the AU's course with the turn, as written):
    whether an expression shows when the head turns away."""
    n = len(x)
    turn, other = smooth_noise(rng, n, 0.99, 1.0), smooth_noise(rng, n, 0.99, 1.0)
    course = np.sqrt(value) * standardised(np.abs(turn)) + np.sqrt(1 - value) * standardised(np.abs(other))
    x[:, ch[0]] += standardised(turn, 0.1)
    x[:, ch[1]] += standardised(course, 0.4)
    return float(np.corrcoef(course, np.abs(turn))[0, 1])


def eye_head_latency(rng, x, ch, value):
    """A gaze angle moving to a new place about every 1.5 s (within 3 frames) and a head angle following each move
    the same way, over 10 frames, 2 + 16 `value` frames later, at one variance each (the delay in frames, as
    written): how long the head takes to follow the eyes."""
    n, delay = len(x), int(round(2 + 16 * value))
    holds = np.maximum(5, np.round(rng.exponential(45, n)).astype(int))
    holds = covering(holds, n + delay)
    course = np.repeat(rng.standard_normal(len(holds)), holds)[: n + delay]
    gaze = np.convolve(course, np.ones(3) / 3, mode="same")[delay:]
    head = np.convolve(course, np.ones(10) / 10, mode="same")[:n]
    x[:, ch[0]] += standardised(gaze, 0.1)
    x[:, ch[1]] += standardised(head, 0.1)
    return float(delay)


def home_gaze(rng, x, ch, value):
    """A gaze angle resting 20-40 frames at a time, a share 0.75 `value` of its rests (at random among them) at a
    place of its own (the clip's "home") and the others each at a new place, at one mean and variance (the share of
    rests at home, as written): how often the eyes come back to one place."""
    n = len(x)
    holds = rng.integers(20, 41, n // 20 + 1)
    holds = covering(holds, n)
    at_home = rng.permutation(len(holds)) < int(round(0.75 * value * len(holds)))
    places = np.where(at_home, rng.standard_normal(), rng.standard_normal(len(holds)))
    x[:, ch[0]] += standardised(np.convolve(np.repeat(places, holds)[:n], np.ones(3) / 3, mode="same"), 0.1)
    return float(at_home.mean())


def alternation(rng, x, ch, value):
    """Two AUs, each busy (a burst every 12 frames) or quiet in stretches of 2 s, busy half the time on average;
    in a share `value` of the stretches the second is busy exactly when the first is not, in the rest at random,
    at one expected mean and variance each (the share of stretches where exactly one is busy, as written): whether
    two expressions take turns."""
    n, stretch = len(x), 2 * FPS
    count = -(-n // stretch)
    first = rng.random(count) < 0.5
    second = np.where(rng.random(count) < value, ~first, rng.random(count) < 0.5)
    for c, busy in zip(ch, (first, second)):
        x[:, c] += 0.4 * burst_track(n, np.flatnonzero(np.repeat(busy, stretch)[:n])[::12])
    return float((first != second).mean())


def either_way_follow(rng, x, ch, value):
    """Two head angles, the second following the first's slow movement 6 frames later for a share `value` of its
    variance, the same way or mirrored (which, at random per clip), and wandering on its own for the rest, at one
    variance each (the share, as written): how closely one movement follows another when its direction does not say."""
    n, lag = len(x), 6
    lead = smooth_noise(rng, n + lag, 0.95, 1.0)
    follow = (np.sqrt(value) * rng.choice((-1.0, 1.0)) * standardised(lead[:n])
              + np.sqrt(1 - value) * standardised(smooth_noise(rng, n, 0.95, 1.0)))
    x[:, ch[0]] += standardised(lead[lag:], 0.1)
    x[:, ch[1]] += standardised(follow, 0.1)
    return float(np.corrcoef(follow, lead[:n])[0, 1] ** 2)


def turn_point(rng, x, ch, value):
    """A gaze angle sweeping back and forth (each sweep 0.7-2 s) and as many bursts of an AU as it has turns; a share
    `value` of the bursts peak at a turn (either end of a sweep), the rest at random times, at one mean and variance
    each (the share at a turn, as written): whether an expression comes where the eyes change direction."""
    n = len(x)
    edges = np.r_[0, np.cumsum(rng.uniform(0.7 * FPS, 2 * FPS, n // 20 + 2))]
    phase = np.pi * np.interp(np.arange(n), edges, np.arange(len(edges)))
    turns = edges[(edges >= BURST) & (edges < n - BURST)].astype(int)
    at_turn = rng.random(len(turns)) < value
    expression = burst_track(n, [turn - BURST // 2 if keeps else int(rng.integers(0, n - BURST))
                                 for turn, keeps in zip(turns, at_turn)])
    x[:, ch[0]] += standardised(np.cos(phase), 0.1)
    x[:, ch[1]] += standardised(expression, 0.4)
    return float(at_turn.mean()) if len(turns) else 0.0


def locked_any_lag(rng, x, ch, value):
    """Two AUs with bursts at one count each; a share `value` of the second's come one delay after one of the
    first's, the delay drawn per clip from 4-40 frames either way (the second leading or following), the rest at
    random times, at one mean and variance each (the share locked, as written): whether two expressions keep time
    with each other, whatever the delay."""
    n = len(x)
    lag = int(rng.integers(4, 41)) * int(rng.choice((-1, 1)))
    first = spaced_starts(rng, n, max(3, n // 60), 3 * BURST)
    locked = (rng.random(len(first)) < value) & (first + lag >= 0) & (first + lag < n - BURST)
    second = np.where(locked, first + lag, rng.integers(0, n - BURST, len(first)))
    for c, starts in zip(ch, (first, second)):
        x[:, c] += standardised(burst_track(n, starts), 0.4)
    return float(locked.mean())


def posture_context(rng, x, ch, value):
    """A head angle's slow wander and two AUs with bursts at one count each, half of them while the head is above its
    clip median (up) and half below; half of the second's come with one of the first's, and of those a share
    `value` while up, the rest while down (the second's others placed to keep its half and half), at one mean and
    variance each (the share of shared bursts while up, as written): whether two expressions go together in one
    posture, which no two of the three channels show."""
    n = len(x)
    head = smooth_noise(rng, n, 0.995, 1.0)
    up = head[: n - BURST] > np.median(head)
    pools = (np.flatnonzero(up), np.flatnonzero(~up))
    half = max(2, n // 90)
    first_up, first_down = (rng.choice(pool, half) for pool in pools)
    shared_up = int(round(value * half))
    second = np.r_[first_up[:shared_up], first_down[: half - shared_up],
                   rng.choice(pools[0], half - shared_up), rng.choice(pools[1], shared_up)]
    x[:, ch[0]] += standardised(head, 0.1)
    for c, starts in zip(ch[1:], (np.r_[first_up, first_down], second)):
        x[:, c] += standardised(burst_track(n, starts), 0.4)
    return shared_up / half


def height_alternation(rng, x, ch, value):
    """One AU's bursts (about one a second) at one set of heights (0.5-1.5, evenly), tall and short in turn, then
    a share 1 - `value` of them shuffled among their places, at one count, mean and variance (the share of successive
    bursts on opposite sides of the median height, as written): whether big and small expressions take turns."""
    n = len(x)
    starts = spaced_starts(rng, n, max(4, n // FPS), 2 * BURST + 5)
    heights = np.linspace(0.5, 1.5, len(starts))
    half = len(starts) // 2
    order = np.empty(len(starts), int)  # indices into heights: the tall half at even places, the short at odd
    order[::2], order[1::2] = rng.permutation(np.arange(half, len(starts))), rng.permutation(half)
    moved = np.flatnonzero(rng.random(len(starts)) >= value)
    order[moved] = order[rng.permutation(moved)]
    track = np.zeros(n)
    for at, height in zip(starts, heights[order]):
        add_event(track, int(at), bump(BURST), float(height))
    x[:, ch[0]] += standardised(track, 0.4)
    tall = heights[order] > np.median(heights)
    return float(np.mean(tall[1:] != tall[:-1]))


def head_shake(rng, x, ch, value):
    """A head angle turning about every 1.5 s for 20 frames, to one side at random: a share `value` of the turns swing
    on to the other side and back (one full cycle, a shake), the rest go out and come back (half a cycle, a look
    away), at one mean and variance (the share of shakes, as written): whether the head says no or turns aside."""
    n, length = len(x), 2 * BURST
    starts = spaced_starts(rng, n, max(3, n // 45), length + 10)
    shakes = rng.random(len(starts)) < value
    phase = (np.arange(length) + 0.5) / length
    track = np.zeros(n)
    for at, shake in zip(starts, shakes):
        add_event(track, int(at), np.sin((2 if shake else 1) * np.pi * phase), float(rng.choice((-1.0, 1.0))))
    x[:, ch[0]] += standardised(track, 0.1)
    return float(shakes.mean())


def phase_locking(rng, x, ch, value):
    """A head angle nodding in a steady cycle (1-2 s, drawn per clip) and an AU's bursts, one a cycle: a share
    `value` of them peak at one phase of the cycle (drawn per clip), the rest at random phases, at one mean and
    variance each (the share locked, as written): whether an expression keeps time with the head, at whatever point
    of its movement."""
    n = len(x)
    period, offset, locked_phase = rng.uniform(FPS, 2 * FPS), rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)
    cycles = np.arange(int((n - BURST) // period)) * period
    locked = rng.random(len(cycles)) < value
    into = np.where(locked, ((locked_phase - offset) % (2 * np.pi)) / (2 * np.pi), rng.random(len(cycles)))
    track = burst_track(n, [np.clip(round(peak) - BURST // 2, 0, n - BURST) for peak in cycles + into * period])
    x[:, ch[0]] += standardised(np.sin(2 * np.pi * np.arange(n) / period + offset), 0.1)
    x[:, ch[1]] += standardised(track, 0.4)
    return float(locked.mean()) if len(cycles) else 0.0


def onset_asynchrony(rng, x, ch, value):
    """Two AUs bursting in pairs at one count, each pair's later burst 12 `value` frames (give or take 2) after the
    earlier, which AU goes first at random per pair, at one mean and variance each (the mean offset over 12 frames,
    as written): how far the two sides of an expression fall out of step, whichever leads."""
    n = len(x)
    starts = spaced_starts(rng, n, max(3, n // 60), 3 * BURST + 12)
    offsets = np.clip(np.round(12 * value + rng.uniform(-2, 2, len(starts))), 0, None).astype(int)
    first_leads = rng.random(len(starts)) < 0.5
    tracks = np.zeros((2, n))
    for at, offset, leads in zip(starts, offsets, first_leads):
        add_event(tracks[0], int(at + (0 if leads else offset)), bump(BURST), 1.0)
        add_event(tracks[1], int(at + (offset if leads else 0)), bump(BURST), 1.0)
    for c, track in zip(ch, tracks):
        x[:, c] += standardised(track, 0.4)
    return float(offsets.mean()) / 12


def anticipatory_stillness(rng, x, ch, value):
    """A gaze angle moving restlessly and an AU's bursts at one count: before a share `value` of the bursts the eyes
    hold nearly still for 1 s (their movement at a tenth), and for each of the others they do so for 1 s at a random
    time, at one mean and variance each (the share of bursts after a still second, as written): whether the eyes
    settle before an expression."""
    n, still = len(x), FPS
    starts = spaced_starts(rng, n - still, max(3, n // 60), still + 2 * BURST) + still
    settles = rng.random(len(starts)) < value
    calm = np.ones(n)
    for at, settled in zip(starts, settles):
        begin = int(at) - still if settled else int(rng.integers(0, n - still))
        calm[begin: begin + still] = 0.1
    x[:, ch[0]] += standardised(smooth_noise(rng, n, 0.7, 1.0) * calm, 0.1)
    x[:, ch[1]] += standardised(burst_track(n, starts), 0.4)
    return float(settles.mean())


def interval_alternation(rng, x, ch, value):
    """One AU's bursts at one set of gaps (half short, 12-18 frames, half long, 28-40), short and long in turn, then
    a share 1 - `value` of the gaps shuffled among their places, at one count, mean and variance (the share of
    successive gaps one long and one short, as written): whether an expression comes in a long-short
    rhythm."""
    n = len(x)
    count = max(4, (n - 2 * BURST) // 30)
    half = count // 2
    sizes = np.r_[rng.integers(12, 19, half), rng.integers(28, 41, count - half)]  # the short half, then the long
    order = np.empty(count, int)  # indices into sizes: the long half at even places, the short at odd
    order[::2], order[1::2] = rng.permutation(np.arange(half, count)), rng.permutation(half)
    moved = np.flatnonzero(rng.random(count) >= value)
    order[moved] = order[rng.permutation(moved)]
    x[:, ch[0]] += standardised(burst_track(n, np.cumsum(np.r_[int(rng.integers(0, 10)), sizes[order]])), 0.4)
    long_gap = order >= half
    return float(np.mean(long_gap[1:] != long_gap[:-1]))


def noise(rng, x, ch, value):
    return 0.0


@dataclass(frozen=True)
class SignalKind:
    name: str
    description: str
    channels: tuple[str, ...]  # the channel pools it plants into: "au", "gaze" or "head"
    plant: Callable[[np.random.Generator, np.ndarray, tuple[int, ...], float], float]


KINDS: dict[str, SignalKind] = {k.name: k for k in (
    SignalKind("level", "the clip mean of one AU", ("au",), level),
    SignalKind("spread", "the clip std of one AU", ("au",), spread),
    SignalKind("inverted-u", "an inverted U in the clip mean of one AU", ("au",), inverted_u),
    SignalKind("threshold", "the clip mean of one AU above a threshold, else 0", ("au",), threshold),
    SignalKind("co-occurrence", "the share of one AU's bursts that coincide with another's (lag 0)", ("au", "au"),
               co_occurrence),
    SignalKind("order", "the share of burst pairs that run AU a then AU b, 20 frames apart", ("au", "au"), order),
    SignalKind("lead-lag", "which of two AUs leads the other by 8 frames", ("au", "au"), lead_lag),
    SignalKind("slow-delay", "the 1-4 s delay from an event in one AU to the answer in another", ("au", "au"),
               slow_delay),
    SignalKind("jerkiness", "one minus a head angle's lag-one correlation, at one variance", ("head",), jerkiness),
    SignalKind("rhythm", "the frequency of an oscillation of one AU, at one amplitude", ("au",), rhythm),
    SignalKind("burst-duration", "how long one AU's bursts last, at one total time (duration against count)",
               ("au",), burst_duration),
    SignalKind("trend", "the drift of one AU from the clip's start to its end, at one mean", ("au",), trend),
    SignalKind("rare-events", "how many large brief spikes one AU has (0 to a few)", ("au",), rare_events),
    SignalKind("skew", "how skewed one AU's movement is (brief rises over a slow sag), at one mean and variance",
               ("au",), skew),
    SignalKind("peak-time", "when in the clip one AU's single large event comes", ("au",), peak_time),
    SignalKind("synchrony", "the share of two head angles' slow movement they have in common", ("head", "head"),
               synchrony),
    SignalKind("tremor", "the share of a head angle's movement in a 5-7 Hz oscillation, at one variance", ("head",),
               tremor),
    SignalKind("envelope", "how unevenly one AU's movement is spread over the clip (active and calm stretches)",
               ("au",), envelope),
    SignalKind("onset", "how fast one AU's events rise against how fast they fade (one shape reversed in time)",
               ("au",), onset),
    SignalKind("regularity", "how evenly spaced one AU's bursts are (periodic against random times), at one count",
               ("au",), regularity),
    SignalKind("bimodality", "whether one AU switches between two levels or wanders about one, at one mean and "
               "variance", ("au",), bimodality),
    SignalKind("amplitude-coupling", "how much one AU moves more while another is high, at one variance each",
               ("au", "au"), amplitude_coupling),
    SignalKind("stillness", "the share of the clip a head angle is held still, at one variance", ("head",), stillness),
    SignalKind("interaction", "the product of two AUs' levels (which side one sits on flips what the other says)",
               ("au", "au"), interaction),
    SignalKind("chirp", "whether one AU's oscillation speeds up or slows down over the clip, at one spectrum",
               ("au",), chirp),
    SignalKind("spread-trend", "whether one AU's movement grows or fades over the clip, at one variance", ("au",),
               spread_trend),
    SignalKind("tails", "how much of a head angle's movement comes in a few large turns, at one variance", ("head",),
               tails),
    SignalKind("anti-phase", "whether two AUs' slow movements go together or against each other, at one variance "
               "each", ("au", "au"), anti_phase),
    SignalKind("jitter", "how much the delay from an event in one AU to the answer in another varies", ("au", "au"),
               jitter),
    SignalKind("undershoot", "how far one AU dips below its resting level after each burst, at one variance", ("au",),
               undershoot),
    SignalKind("step", "how much of one AU's movement is a single lasting change of level, at one variance", ("au",),
               step),
    SignalKind("motif", "how many of one AU's events repeat the same shape, at one count", ("au",), motif),
    SignalKind("coupling-change", "how much two AUs go together in one half of the clip and against each other in "
               "the other, at one variance each", ("au", "au"), coupling_change),
    SignalKind("echo", "how much a head angle repeats its own movements about 1 s later, at one variance", ("head",),
               echo),
    SignalKind("height-spread", "how unequal the heights of one AU's bursts are, at one count, mean and variance",
               ("au",), height_spread),
    SignalKind("plateau", "how long one AU's events are held at their peak (flat-topped against peaked), at one "
               "count", ("au",), plateau),
    SignalKind("frequency-ratio", "the ratio of two AUs' oscillation frequencies (1 to 2), at one amplitude each",
               ("au", "au"), frequency_ratio),
    SignalKind("duration-spread", "how unequal the durations of one AU's bursts are, at one count, mean duration and "
               "variance", ("au",), duration_spread),
    SignalKind("clustering", "whether one AU's bursts come in bouts or at random times, at one count and variance",
               ("au",), clustering),
    SignalKind("spectral-slope", "how fast a head angle's power falls with frequency (1/f^0.5 to 1/f^2), at one "
               "variance", ("head",), spectral_slope),
    SignalKind("rate-trend", "whether one AU's bursts become more frequent over the clip, at one count and variance",
               ("au",), rate_trend),
    SignalKind("phase-offset", "how far behind one AU's oscillation runs another's at one shared frequency (0 to pi), "
               "at one amplitude each", ("au", "au"), phase_offset),
    SignalKind("height-duration", "whether one AU's taller bursts last longer or shorter, at one count, set of heights "
               "and durations, mean and variance", ("au",), height_duration),
    SignalKind("bandwidth", "how wide the frequency band of one AU's oscillation is (a steady rhythm against a "
               "wandering one), at one amplitude", ("au",), bandwidth),
    SignalKind("self-modulation", "how much a head angle's fast movement grows where its slow position is higher, at "
               "one variance", ("head",), self_modulation),
    SignalKind("inhibition", "the share of one AU's bursts that keep out of the 1 s after another's, at one count "
               "each", ("au", "au"), inhibition),
    SignalKind("arch", "whether one AU's slow course peaks mid-clip or dips there, at one mean and variance", ("au",),
               arch),
    SignalKind("triad", "the share of three AUs' bursts that come all three at once, every pair coinciding equally "
               "often", ("au", "au", "au"), triad),
    SignalKind("velocity-coupling", "whether two head angles' fast movements go together or against each other while "
               "their slow movements are independent, at one variance each", ("head", "head"), velocity_coupling),
    SignalKind("ceiling", "the share of the clip one AU is held flat at its highest, at one mean and variance",
               ("au",), ceiling),
    SignalKind("saccades", "how much of a gaze angle's movement comes in jumps, at one variance and spectrum",
               ("gaze",), saccades),
    SignalKind("habituation", "how fast one AU's answers to another's events wear off over the clip, at one count "
               "each", ("au", "au"), habituation),
    SignalKind("answer-gain", "whether a stronger event in one AU draws a stronger answer in another 6 frames later, "
               "at one count, set of heights, mean and variance each", ("au", "au"), answer_gain),
    SignalKind("aversion", "the share of a gaze angle's glances away (either side) that start with an AU's burst, at "
               "one count, mean and variance each", ("au", "gaze"), aversion),
    SignalKind("persistence", "how long a gaze angle rests between moves (mean fixation 10-60 frames), at one "
               "variance", ("gaze",), persistence),
    SignalKind("after-turn", "the share of an AU's bursts that come 10 frames after a turn of a head angle (either "
               "way), at one count, mean and variance each", ("head", "au"), after_turn),
    SignalKind("refractory", "whether one AU's bursts are taller after longer pauses, at one count, set of heights, "
               "mean and variance", ("au",), refractory),
    SignalKind("focus", "how much of three AUs' movement is concentrated in one of them (which one at random), at "
               "one mean and expected spread each", ("au", "au", "au"), focus),
    SignalKind("turned-expression", "how much an AU's slow course follows how far a head angle is turned (either way), "
               "at one mean and variance each", ("head", "au"), turned_expression),
    SignalKind("eye-head-latency", "how many frames (2-18) a head angle takes to follow a gaze angle's moves, at one "
               "variance each", ("gaze", "head"), eye_head_latency),
    SignalKind("home-gaze", "the share of a gaze angle's rests at one place of its own, at one mean and variance",
               ("gaze",), home_gaze),
    SignalKind("alternation", "the share of 2-s stretches in which exactly one of two AUs is busy (taking turns), each "
               "busy half the time", ("au", "au"), alternation),
    SignalKind("either-way-follow", "how much of a head angle's slow movement follows another's 6 frames later, the "
               "same way or mirrored (at random), at one variance each", ("head", "head"), either_way_follow),
    SignalKind("turn-point", "the share of an AU's bursts that come where a gaze angle's sweep turns (either end), at "
               "one count, mean and variance each", ("gaze", "au"), turn_point),
    SignalKind("locked-any-lag", "the share of one AU's bursts that come one delay (4-40 frames either way, drawn per "
               "clip) after another's, at one count each", ("au", "au"), locked_any_lag),
    SignalKind("posture-context", "whether two AUs' shared bursts come while a head angle is up or down, each AU's "
               "bursts half up and half down", ("head", "au", "au"), posture_context),
    SignalKind("height-alternation", "how often one AU's successive bursts alternate tall and short, at one count, set "
               "of heights, mean and variance", ("au",), height_alternation),
    SignalKind("head-shake", "the share of a head angle's turns that swing on to the other side and back (a shake) "
               "rather than out and back, at one mean and variance", ("head",), head_shake),
    SignalKind("phase-locking", "the share of an AU's bursts that come at one phase (drawn per clip) of a head angle's "
               "steady nodding, at one mean and variance each", ("head", "au"), phase_locking),
    SignalKind("onset-asynchrony", "how far apart two AUs' paired bursts start, whichever leads, at one count, mean "
               "and variance each", ("au", "au"), onset_asynchrony),
    SignalKind("anticipatory-stillness", "the share of an AU's bursts that a still second of a gaze angle comes "
               "before, at one mean and variance each", ("gaze", "au"), anticipatory_stillness),
    SignalKind("interval-alternation", "how often the gaps between one AU's bursts alternate long and short, at one "
               "count, set of gaps, mean and variance", ("au",), interval_alternation),
    SignalKind("noise", "nothing: the trait is pure noise", (), noise),
)}


def assign_channels(kinds: list[str]) -> list[tuple[int, ...]]:
    """Channels of their own for each kind, in order, from the AU, gaze and head pools (a kind gets the next free ones);
    ValueError, naming the pool, when the kinds ask for more channels than it has."""
    pools = {"au": list(AU_CHANNELS), "gaze": list(GAZE_CHANNELS), "head": list(HEAD_CHANNELS)}
    asked = {pool: sum(KINDS[name].channels.count(pool) for name in kinds) for pool in pools}
    for pool, count in asked.items():
        if count > len(pools[pool]):
            raise ValueError(f"these kinds need {count} {pool} channels, and there are {len(pools[pool])}")
    return [tuple(pools[pool].pop(0) for pool in KINDS[name].channels) for name in kinds]


def person_levels(rng: np.random.Generator) -> np.ndarray:
    """(22,) a person's resting levels: AUs about 1.5 (room to move within OpenFace's 0-5), angles about 0."""
    return np.r_[rng.uniform(1.2, 1.8, len(AU_CHANNELS)), rng.normal(0, 0.05, len(FEATURE_COLUMNS) - len(AU_CHANNELS))]


def background(rng: np.random.Generator, n: int, levels: np.ndarray) -> np.ndarray:
    """(n, F) smooth noise around a person's levels."""
    x = np.zeros((n, len(FEATURE_COLUMNS)))
    for j in range(len(FEATURE_COLUMNS)):
        x[:, j] = levels[j] + smooth_noise(rng, n, 0.9, 0.12 if j in AU_CHANNELS else 0.03)
    return x


def clip_frames(rng: np.random.Generator, levels: np.ndarray, n: int, kinds: list[str],
                channels: list[tuple[int, ...]], values: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """One clip of n frames carrying each kind at its latent value: (n, 22) frames within OpenFace's ranges, rounded
    as OpenFace writes them, and each kind's signal."""
    x = background(rng, n, levels)
    signals = [KINDS[name].plant(rng, x, ch, float(v)) for name, ch, v in zip(kinds, channels, values)]
    x[:, :len(AU_CHANNELS)] = np.clip(x[:, :len(AU_CHANNELS)], 0, 5)
    x[:, len(AU_CHANNELS):] = np.clip(x[:, len(AU_CHANNELS):], -0.6, 0.6)
    return np.round(x, 3), signals
