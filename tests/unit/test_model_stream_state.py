"""The replay on the stream processor's own feature functions."""

import pandas as pd
import pytest

from models.features import Catalog


def test_stream_processor_state_reads_back_what_the_stream_would_store():
    from models.stream_state import StreamProcessorState

    items = pd.DataFrame({"item_id": ["a", "b", "c"], "category": ["x", "y", "x"]})
    state = StreamProcessorState(Catalog.from_items(items))
    state.observe(user=0, item=0, positive=False, ts=1000.0, session_key=1)
    state.observe(user=0, item=2, positive=True, ts=1060.0, session_key=1)
    view = state.view(0)
    assert view.last_items == [2, 0]
    assert view.session_events == 2 and view.session_clicks == 1
    assert view.session_category_share()[0] == 1.0  # both events in category x (index 0)
    assert view.last_event_ts == pytest.approx(1060.0)
    assert state.trend(2000.0)[2] > 0 and state.trend(2000.0)[1] == 0
    assert state.view(1) is None
