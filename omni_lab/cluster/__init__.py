"""Studies beyond one machine: `ol.cluster.Ray(...)` runs a study's cells on Ray actors that each load the model once.

    import omni_lab as ol
    data = ol.studies.Dataset.shapesworld(1000)
    frame = ol.studies.sweep("toy", data, ["evs"], [0.5], cluster=ol.cluster.Ray(workers=8), out="sweep.sqlite")

`reinsertion`, `pruned_contribution`, `routing_shift` and `expert_specialization` take the same `cluster=` with a
Dataset, one prompt a unit of work.

Ray is an optional extra (`pip install 'omni-lab[cluster]'`); it is imported only when a study runs with
`cluster=`, never by `import omni_lab` or `import omni_lab.cluster`.
"""

from .ray import Ray, StudyWorker

__all__ = ["Ray", "StudyWorker"]
