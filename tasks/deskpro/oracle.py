"""Which Table 3 rows see oracle faces (SynthWorld's clean face renders)."""

from __future__ import annotations

from tasks.core.params import ORACLE_RESTORER, Params, Variant


def sees_oracle_faces(params: Params, variant: Variant) -> bool:
    """True for a row whose teacher stream is tested on the clean faces (models.face_restorer: clean).

    No real system restores a surveillance face perfectly, so such a row's numbers (phi_t, DeSKPro*)
    are optimistic; with bicubic or a restorer model it sees what that restorer gives.
    """
    return params.models.face_restorer == ORACLE_RESTORER and variant.face_stream == "teacher"
