"""The wire schema tracebridge writes and reads: Perfetto's field numbers (our subset of its
``TracePacket``, ``TrackDescriptor``, ``TrackEvent``, ``InternedData``, ``ClockSnapshot`` and
``DebugAnnotation``; see ``protos/``), the enum values used, and tracebridge's own track descriptions,
which the reader recognises. Shared by the writer, the reader and merge.
"""

from __future__ import annotations

from .wire import Field, varint

# TracePacket
P_TIMESTAMP = Field(8)
P_CLOCK_ID = Field(58)
P_TRACK_EVENT = Field(11)
P_TRACK_DESCRIPTOR = Field(60)
P_CLOCK_SNAPSHOT = Field(6)
P_SEQUENCE_ID = Field(10)
P_INTERNED = Field(12)
P_FLAGS = Field(13)
P_DEFAULTS = Field(59)
P_PREVIOUS_DROPPED = Field(42)
P_FIRST_ON_SEQUENCE = Field(87)
P_COMPRESSED = Field(50)
TRACE_PACKET = Field(1)
# TracePacketDefaults / TrackEventDefaults
D_CLOCK_ID = Field(58)
D_TRACK_EVENT_DEFAULTS = Field(11)
TED_TRACK_UUID = Field(11)
# ClockSnapshot
CS_CLOCKS = Field(1)
CS_PRIMARY = Field(2)
C_ID = Field(1)
C_TIMESTAMP = Field(2)
C_INCREMENTAL = Field(3)
# InternedData
I_CATEGORIES = Field(1)
I_NAMES = Field(2)
I_ANNOTATION_NAMES = Field(3)
I_SOURCE_LOCATIONS = Field(4)
I_LOG_BODIES = Field(20)
INTERNED_IID = Field(1)
INTERNED_NAME = Field(2)
SL_FILE = Field(2)
SL_FUNCTION = Field(3)
SL_LINE = Field(4)
# TrackDescriptor
TD_UUID = Field(1)
TD_PARENT = Field(5)
TD_NAME = Field(2)
TD_PROCESS = Field(3)
TD_THREAD = Field(4)
TD_COUNTER = Field(8)
TD_DESCRIPTION = Field(14)
PD_PID = Field(1)
PD_CMDLINE = Field(2)
PD_NAME = Field(6)
PD_START = Field(7)
THD_PID = Field(1)
THD_TID = Field(2)
THD_NAME = Field(5)
CD_UNIT = Field(3)
CD_UNIT_NAME = Field(6)
# TrackEvent
E_TYPE = Field(9)
E_TRACK = Field(11)
E_NAME_IID = Field(10)
E_NAME = Field(23)
E_CATEGORY_IIDS = Field(3)
E_CATEGORIES = Field(22)
E_ANNOTATIONS = Field(4)
E_COUNTER = Field(30)
E_DOUBLE_COUNTER = Field(44)
E_FLOWS = Field(47)
E_TERMINATING_FLOWS = Field(48)
E_LOG = Field(21)
E_CALLSTACK = Field(55)
E_CORRELATION_STR = Field(53)
E_SOURCE_LOCATION_IID = Field(34)
CALLSTACK_FRAMES = Field(1)
FR_FUNCTION = Field(1)
FR_FILE = Field(2)
FR_LINE = Field(3)
LOG_SOURCE = Field(1)
LOG_BODY = Field(2)
LOG_PRIO = Field(3)
# DebugAnnotation
A_NAME_IID = Field(1)
A_NAME = Field(10)
A_BOOL = Field(2)
A_UINT = Field(3)
A_INT = Field(4)
A_DOUBLE = Field(5)
A_STRING = Field(6)
A_JSON = Field(9)
A_DICT = Field(11)
A_ARRAY = Field(12)

SLICE_BEGIN = 1
SLICE_END = 2
INSTANT = 3
COUNTER = 4
CLEARED = 1
NEEDS_STATE = 2
BOOTTIME = 6
MONOTONIC = 3
REALTIME = 1
INCREMENTAL_CLOCK = 64

#: Counter units that have a CounterDescriptor.Unit value; others go in unit_name.
COUNTER_UNITS = {"ns": 1, "count": 2, "bytes": 3}
UNIT_NAMES = {v: k for k, v in COUNTER_UNITS.items()}
#: Description of the tracks that hold a thread's overlapping spans; the reader recognises them by it.
OVERLAP_TRACK_DESCRIPTION = "tracebridge: spans of one thread that overlap without nesting (async tasks)"
ACTIVITY_TRACK_DESCRIPTION = "tracebridge: activities (may begin and end on different threads)"
NAMED_ACTIVITY_TRACK_DESCRIPTION = "tracebridge: activities on a named track"
STATS_TRACK_DESCRIPTION = "tracebridge: the session, with what it recorded and lost"


def frame(packet: bytes) -> bytes:
    """One ``Trace.packet`` record: tag 0x0a, length, packet."""
    return b"\x0a" + varint(len(packet)) + packet
