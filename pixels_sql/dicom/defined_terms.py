"""Defined Terms of the standard that the project checks values against.

Modality (0008,0060) takes the Defined Terms of PS3.3 C.7.3.1.1.1. Defined Terms (unlike
Enumerated Values) may be extended by an implementation, but a catalog's data tests (the dbt
project's ``accepted_values``) check against this list: a value outside it is worth a look (a
typo, a vendor's private code). The retired terms stay accepted because old archives hold them
(PS3.3 keeps them "for backward compatibility"; ``ST`` for SPECT and ``DS`` for DSA are still
found in real data). CID 33 "Modality" (PS3.16) codes the same concepts: tests check that
every code of pydicom's copy of it is here.
"""

from __future__ import annotations

# PS3.3 C.7.3.1.1.1 Defined Terms (current edition), code -> meaning.
MODALITY_TERMS: dict[str, str] = {
    "ANN": "Annotation",
    "AR": "Autorefraction",
    "ASMT": "Content Assessment Results",
    "AU": "Audio",
    "BDUS": "Bone Densitometry (ultrasound)",
    "BI": "Biomagnetic imaging",
    "BMD": "Bone Densitometry (X-Ray)",
    "CFM": "Confocal Microscopy",
    "CR": "Computed Radiography",
    "CT": "Computed Tomography",
    "CTPROTOCOL": "CT Protocol (Performed)",
    "DG": "Diaphanography",
    "DMS": "Dermoscopy",
    "DOC": "Document",
    "DX": "Digital Radiography",
    "ECG": "Electrocardiography",
    "EEG": "Electroencephalography",
    "EMG": "Electromyography",
    "EOG": "Electrooculography",
    "EPS": "Cardiac Electrophysiology",
    "ES": "Endoscopy",
    "FID": "Fiducials",
    "GM": "General Microscopy",
    "HC": "Hard Copy",
    "HD": "Hemodynamic Waveform",
    "IO": "Intra-Oral Radiography",
    "IOL": "Intraocular Lens Data",
    "IVOCT": "Intravascular Optical Coherence Tomography",
    "IVUS": "Intravascular Ultrasound",
    "KER": "Keratometry",
    "KO": "Key Object Selection",
    "LEN": "Lensometry",
    "LS": "Laser surface scan",
    "M3D": "Model for 3D Manufacturing",
    "MG": "Mammography",
    "MR": "Magnetic Resonance",
    "NM": "Nuclear Medicine",
    "OAM": "Ophthalmic Axial Measurements",
    "OCT": "Optical Coherence Tomography (non-Ophthalmic)",
    "OP": "Ophthalmic Photography",
    "OPM": "Ophthalmic Mapping",
    "OPT": "Ophthalmic Tomography",
    "OPTBSV": "Ophthalmic Tomography B-scan Volume Analysis",
    "OPTENF": "Ophthalmic Tomography En Face",
    "OPV": "Ophthalmic Visual Field",
    "OSS": "Optical Surface Scan",
    "OT": "Other",
    "PA": "Photoacoustic",
    "PLAN": "Plan",
    "POS": "Position Sensor",
    "PR": "Presentation State",
    "PT": "Positron emission tomography (PET)",
    "PX": "Panoramic X-Ray",
    "REG": "Registration",
    "RESP": "Respiratory Waveform",
    "RF": "Radio Fluoroscopy",
    "RG": "Radiographic imaging (conventional film/screen)",
    "RTDOSE": "Radiotherapy Dose",
    "RTIMAGE": "Radiotherapy Image",
    "RTINTENT": "Radiotherapy Intent",
    "RTPLAN": "Radiotherapy Plan",
    "RTRAD": "RT Radiation",
    "RTRECORD": "RT Treatment Record",
    "RTSEGANN": "Radiotherapy Segment Annotation",
    "RTSTRUCT": "Radiotherapy Structure Set",
    "RWV": "Real World Value Map",
    "SEG": "Segmentation",
    "SM": "Slide Microscopy",
    "SMR": "Stereometric Relationship",
    "SR": "SR Document",
    "SRF": "Subjective Refraction",
    "STAIN": "Automated Slide Stainer",
    "TEXTUREMAP": "Texture Map",
    "TG": "Thermography",
    "US": "Ultrasound",
    "VA": "Visual Acuity",
    "XA": "X-Ray Angiography",
    "XAPROTOCOL": "XA Protocol (Performed)",
    "XC": "External-camera Photography",
}

# PS3.3 C.7.3.1.1.1 Retired Defined Terms, code -> meaning.
RETIRED_MODALITY_TERMS: dict[str, str] = {
    "AS": "Angioscopy",
    "CD": "Color flow Doppler",
    "CF": "Cinefluorography",
    "CP": "Culposcopy",
    "CS": "Cystoscopy",
    "DD": "Duplex Doppler",
    "DF": "Digital fluoroscopy",
    "DM": "Digital microscopy",
    "DS": "Digital Subtraction Angiography",
    "EC": "Echocardiography",
    "FA": "Fluorescein angiography",
    "FS": "Fundoscopy",
    "LP": "Laparoscopy",
    "MA": "Magnetic resonance angiography",
    "MS": "Magnetic resonance spectroscopy",
    "OPR": "Ophthalmic Refraction",
    "ST": "Single-photon emission computed tomography (SPECT)",
    "VF": "Videofluorography",
}


def modality_values() -> list[str]:
    """Every value Modality may take by PS3.3 C.7.3.1.1.1, current and retired, sorted."""
    return sorted(MODALITY_TERMS.keys() | RETIRED_MODALITY_TERMS.keys())
