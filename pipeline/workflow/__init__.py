"""Local runner for the Argo workflows defined (with Hera) in workflows/."""
