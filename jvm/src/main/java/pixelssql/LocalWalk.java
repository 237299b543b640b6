package pixelssql;

import java.io.IOException;
import java.io.Serializable;
import java.nio.file.DirectoryIteratorException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.PathMatcher;
import java.nio.file.Paths;
import java.nio.file.SecureDirectoryStream;
import java.nio.file.attribute.BasicFileAttributeView;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.Deque;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.NoSuchElementException;
import java.util.Set;

/**
 * The walk of a local folder, in parts that Spark tasks walk side by side, each streamed in path
 * order: nothing per file is kept, so a million files cost no more memory than a thousand.
 *
 * <p>{@link #plan} reads the top levels of the tree (a bounded number of entries) and cuts it into
 * {@link Unit}s in path order: the subtree of a folder, or some named entries of a folder. {@link
 * Walker} walks a list of units. A folder's entries are read with one {@code lstat} each and
 * sorted by name, a folder's name counting as {@code name/}: the depth-first walk then gives the
 * entries in the order of their paths.
 *
 * <p>Symlinks are followed, to files and to folders, as {@code find -L} does: an entry outside
 * the tree is listed under each symlink that leads to it. An entry reached through a symlink is
 * left out when its real path is one the walk lists without symlinks (real paths win: {@link
 * Scope#listsRealPath}), and a symlink back to a folder it is inside of is a loop and ends there.
 * These decisions need no record of the files listed, and none shared between the parts.
 */
final class LocalWalk {

  private LocalWalk() {}

  /** Which names the walk skips, and what it gives for entries that are not readable files. */
  enum Naming {
    /** list_files: names starting with "." are skipped; every other thing gets a row. */
    LIST_FILES,
    /**
     * read_files: Spark's file sources' rule for data files — names starting with "." or "_"
     * are skipped (not names holding "="), and names ending "._COPYING_"; only regular files
     * that are not empty are given.
     */
    SPARK;

    boolean skips(String name) {
      if (name.startsWith(".")) {
        return true;
      }
      if (this == LIST_FILES) {
        return false;
      }
      return (name.startsWith("_") && !name.contains("=")) || name.endsWith("._COPYING_");
    }
  }

  /** What is listed and how: the same for every part of one listing. */
  static final class Scope implements Serializable {
    private static final long serialVersionUID = 1L;

    final String root;
    final String rootReal;
    final String glob;
    final boolean recursive;
    final Naming naming;
    /**
     * Whether folders are read by {@link NativeFolders} where it loads (each JVM decides for
     * itself: a cluster's executors may not be the driver's platform).
     */
    final boolean nativeFolders;
    private transient PathMatcher matcher;

    Scope(
        String root,
        String rootReal,
        String glob,
        boolean recursive,
        Naming naming,
        boolean nativeFolders) {
      this.root = root;
      this.rootReal = rootReal;
      this.glob = glob;
      this.recursive = recursive;
      this.naming = naming;
      this.nativeFolders = nativeFolders;
    }

    /** The scope of a walk of the local {@code root} (which exists). */
    static Scope of(Path root, String glob, boolean recursive, Naming naming, boolean nativeFolders)
        throws IOException {
      return new Scope(
          root.toString(), root.toRealPath().toString(), glob, recursive, naming, nativeFolders);
    }

    /** Whether this JVM reads the folders by {@link NativeFolders}: wanted, and loaded here. */
    boolean readsNatively() {
      return nativeFolders && NativeFolders.available();
    }

    /** Whether every name matches (no glob to apply). */
    boolean matchesAll() {
      return glob == null || glob.equals("*");
    }

    boolean matches(Path path) {
      if (matchesAll()) {
        return true;
      }
      if (matcher == null) {
        matcher = FileListing.matcher(glob);
      }
      Path name = path.getFileName();
      return name != null && matcher.matches(name);
    }

    /**
     * Whether the walk without symlinks lists {@code real} (a real path: no symlink in it): it
     * lies under the root's real path, through names the walk does not skip (within the top
     * folder when not recursive), and, for a file, its name matches the glob.
     */
    boolean listsRealPath(Path real, boolean folder) {
      Path top = Paths.get(rootReal);
      if (!real.startsWith(top)) {
        return false;
      }
      Path relative = top.relativize(real);
      int count = relative.getNameCount();
      if (real.equals(top)) {
        return folder;
      }
      for (int i = 0; i < count; i++) {
        if (naming.skips(relative.getName(i).toString())) {
          return false;
        }
      }
      if (folder) {
        return recursive;
      }
      return (recursive || count == 1) && matches(real);
    }
  }

  /** A part of the walk: a folder's subtree, or some entries of a folder (by name). */
  static final class Unit implements Serializable {
    private static final long serialVersionUID = 1L;

    final String folder;
    /** The entries of {@code folder} to give (files, symlinks, folders); null: its subtree. */
    final String[] names;

    Unit(String folder, String[] names) {
      this.folder = folder;
      this.names = names;
    }

    /** The whole walk of {@code root}: its subtree, or the one entry of a root that is a file. */
    static Unit root(Path root, boolean isFile) {
      Path parent = root.getParent();
      if (!isFile || parent == null) {
        return new Unit(root.toString(), null);
      }
      return new Unit(parent.toString(), new String[] {root.getFileName().toString()});
    }
  }

  /** One read entry of a folder. */
  private static final class Child {
    final Path folder;
    final String name;
    final BasicFileAttributes attributes; // lstat; null when it failed
    final IOException error;
    final boolean folderEntry; // a real folder (not through a symlink of its own)
    final String key; // sort key: a folder's entries follow it as "name/..." in path order
    private Path path; // made when first needed, unless given

    Child(Path folder, String name, Path path, BasicFileAttributes attributes, IOException error) {
      this.folder = folder;
      this.name = name;
      this.path = path;
      this.attributes = attributes;
      this.error = error;
      this.folderEntry = attributes != null && attributes.isDirectory();
      this.key = folderEntry ? name + "/" : name;
    }

    /** Its path, made when first needed (a listed file needs only its text: {@link #uri}). */
    Path path() {
      if (path == null) {
        path = folder.resolve(name);
      }
      return path;
    }

    /** {@code file:} and its path, as {@link LocalWalk#uri} spells it. */
    String uri(String folderUri) {
      return folderUri + name;
    }
  }

  /** The text that a child's name completes into its {@link #uri}: "file:" + folder + "/". */
  private static String folderUri(Path folder) {
    String text = folder.toString();
    if (text.isEmpty()) {
      return "file:";
    }
    return text.endsWith("/") ? "file:" + text : "file:" + text + "/";
  }

  private static final Comparator<Child> PATH_ORDER =
      (a, b) -> FileListing.compareCodePoints(a.key, b.key);

  /**
   * The entries of {@code folder} (skipped names left out) in path order, each with its lstat.
   * Throws when the folder cannot be listed. {@code nativeFolders}: read by {@link
   * NativeFolders} (loaded), unless a name there needs java.nio's bytes.
   */
  private static List<Child> read(Path folder, Naming naming, boolean nativeFolders)
      throws IOException {
    List<Child> children = nativeFolders ? readNatively(folder, naming) : null;
    if (children == null) {
      children = readThroughNio(folder, naming);
    }
    children.sort(PATH_ORDER);
    return children;
  }

  private static List<Child> readNatively(Path folder, Naming naming) throws IOException {
    List<NativeFolders.Entry> entries = NativeFolders.list(folder);
    if (entries == null) {
      return null;
    }
    List<Child> children = new ArrayList<>(entries.size());
    for (NativeFolders.Entry entry : entries) {
      if (naming.skips(entry.name) || entry.error instanceof NoSuchFileException) {
        continue; // a skipped name, or an entry deleted since the folder was read
      }
      children.add(new Child(folder, entry.name, null, entry.attributes, entry.error));
    }
    return children;
  }

  private static List<Child> readThroughNio(Path folder, Naming naming) throws IOException {
    List<Child> children = new ArrayList<>();
    try (DirectoryStream<Path> stream = Files.newDirectoryStream(folder)) {
      // On Linux the stream holds the folder open: each entry's lstat is then an fstatat
      // relative to it (the kernel resolves one name, not the whole path; ~10% of the walk).
      SecureDirectoryStream<Path> open =
          stream instanceof SecureDirectoryStream ? (SecureDirectoryStream<Path>) stream : null;
      for (Path path : stream) {
        Path name = path.getFileName();
        String text = name.toString();
        if (naming.skips(text)) {
          continue;
        }
        Child child = stat(open, folder, path, name, text);
        if (child != null) {
          children.add(child);
        }
      }
    } catch (DirectoryIteratorException e) {
      throw e.getCause();
    }
    return children;
  }

  /** The lstat of the entry {@code name} of {@code folder}; null when it does not exist. */
  private static Child stat(Path folder, String name, boolean nativeFolders) {
    Path path = folder.resolve(name);
    if (nativeFolders) {
      try {
        NativeFolders.Attributes attributes = NativeFolders.stat(path, false);
        if (attributes != null) {
          return new Child(folder, name, path, attributes, null);
        }
      } catch (NoSuchFileException e) {
        return null;
      } catch (IOException e) {
        return new Child(folder, name, path, null, e);
      }
    }
    return stat(null, folder, path, null, name);
  }

  /**
   * The lstat of {@code path}, the entry {@code name} of {@code folder}: relative to the open
   * folder where there is one (by {@code fileName}), else by the whole path.
   */
  private static Child stat(
      SecureDirectoryStream<Path> open, Path folder, Path path, Path fileName, String name) {
    try {
      BasicFileAttributes attributes =
          open == null
              ? Files.readAttributes(path, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS)
              : open.getFileAttributeView(
                      fileName, BasicFileAttributeView.class, LinkOption.NOFOLLOW_LINKS)
                  .readAttributes();
      return new Child(folder, name, path, attributes, null);
    } catch (NoSuchFileException e) {
      return null;
    } catch (IOException e) {
      return new Child(folder, name, path, null, e);
    }
  }

  /**
   * Cuts the walk of the folder {@code root} into units, in path order: the top levels are read
   * here, one level at a time, until there are at least {@code target} folders to walk or
   * {@code budget} entries were read; a folder that cannot be read here stays one unit (its
   * walk reports it).
   */
  static List<Unit> plan(Path root, Scope scope, int target, int budget) {
    List<Unit> units = new ArrayList<>();
    units.add(new Unit(root.toString(), null));
    if (!scope.recursive) {
      return units;
    }
    int read = 0;
    // Folders kept whole: those that could not be read here (their walk reports them), and
    // those holding a name that a unit, which is text, could not give back to java.nio.
    Set<String> whole = new HashSet<>();
    while (true) {
      long folders = units.stream().filter(u -> u.names == null).count();
      if (folders == 0 || folders >= target || read >= budget) {
        return units;
      }
      List<Unit> next = new ArrayList<>();
      boolean opened = false;
      for (Unit unit : units) {
        if (unit.names != null || read >= budget || whole.contains(unit.folder)) {
          next.add(unit);
          continue;
        }
        List<Child> children;
        try {
          children = read(Paths.get(unit.folder), scope.naming, scope.readsNatively());
        } catch (IOException e) {
          whole.add(unit.folder);
          next.add(unit);
          continue;
        }
        opened = true;
        if (!children.stream().allMatch(child -> NativeFolders.spellsItself(child.path()))) {
          whole.add(unit.folder);
          next.add(unit);
          continue;
        }
        read += children.size();
        List<String> run = new ArrayList<>();
        for (Child child : children) {
          if (child.folderEntry) {
            if (!run.isEmpty()) {
              next.add(new Unit(unit.folder, run.toArray(new String[0])));
              run.clear();
            }
            next.add(new Unit(child.path().toString(), null));
          } else {
            run.add(child.name);
          }
        }
        if (!run.isEmpty()) {
          next.add(new Unit(unit.folder, run.toArray(new String[0])));
        }
      }
      if (!opened) {
        return next; // nothing left to open
      }
      units = next;
    }
  }

  /**
   * Consecutive units grouped into at most {@code parts} lists of about the same weight. A
   * folder's run of files heavier than a share is cut into consecutive pieces first (path order
   * kept): a flat folder of 48 files would otherwise be one task, and whatever a query does per
   * file (a thumbnail, a header) would run on one core.
   */
  static List<List<Unit>> group(List<Unit> units, int parts) {
    double total = 0;
    for (Unit unit : units) {
      total += weight(unit);
    }
    double share = total / Math.max(1, parts);
    List<Unit> pieces = new ArrayList<>();
    for (Unit unit : units) {
      if (unit.names == null || weight(unit) <= share) {
        pieces.add(unit);
        continue;
      }
      int size = Math.max(1, (int) Math.ceil(share * ENTRIES_PER_FOLDER));
      for (int start = 0; start < unit.names.length; start += size) {
        int end = Math.min(unit.names.length, start + size);
        pieces.add(new Unit(unit.folder, Arrays.copyOfRange(unit.names, start, end)));
      }
    }
    List<List<Unit>> groups = new ArrayList<>();
    List<Unit> current = new ArrayList<>();
    double filled = 0;
    for (Unit unit : pieces) {
      current.add(unit);
      filled += weight(unit);
      if (filled >= share * (groups.size() + 1) && groups.size() < parts - 1) {
        groups.add(current);
        current = new ArrayList<>();
      }
    }
    if (!current.isEmpty()) {
      groups.add(current);
    }
    return groups;
  }

  /** A folder's subtree weighs as much as 20 named entries (a series folder of a few files). */
  private static final double ENTRIES_PER_FOLDER = 20.0;

  private static double weight(Unit unit) {
    return unit.names == null ? 1.0 : unit.names.length / ENTRIES_PER_FOLDER;
  }

  /** The entries of some units of one listing, in path order, as they are read. */
  static final class Walker implements Iterator<FileListing.Entry> {
    private final Scope scope;
    private final Iterator<Unit> units;
    private final Deque<Frame> frames = new ArrayDeque<>();
    // The real folders (device and inode) being walked through symlinks, from the top: a
    // symlink to one of them is a loop.
    private final Set<Object> linkedAncestors = new HashSet<>();
    private final boolean nativeFolders;
    private FileListing.Entry pending;

    Walker(Scope scope, List<Unit> units) {
      this.scope = scope;
      this.units = units.iterator();
      this.nativeFolders = scope.readsNatively();
    }

    /** A folder being walked: its entries in path order and the next one to give. */
    private static final class Frame {
      final List<Child> children;
      final Object linkedKey; // the folder's key when reached through a symlink, else null
      final String folderUri; // what the children's names complete into their paths
      int next;

      Frame(List<Child> children, Object linkedKey, Path folder) {
        this.children = children;
        this.linkedKey = linkedKey;
        this.folderUri = folderUri(folder);
      }
    }

    @Override
    public boolean hasNext() {
      while (pending == null) {
        if (frames.isEmpty()) {
          if (!units.hasNext()) {
            return false;
          }
          start(units.next());
          continue;
        }
        Frame frame = frames.peek();
        if (frame.next >= frame.children.size()) {
          frames.pop();
          if (frame.linkedKey != null) {
            linkedAncestors.remove(frame.linkedKey);
          }
          continue;
        }
        visit(frame.children.get(frame.next++), frame.linkedKey != null, frame.folderUri);
      }
      return true;
    }

    @Override
    public FileListing.Entry next() {
      if (!hasNext()) {
        throw new NoSuchElementException();
      }
      FileListing.Entry entry = pending;
      pending = null;
      return entry;
    }

    private void start(Unit unit) {
      Path folder = Paths.get(unit.folder);
      if (unit.names == null) {
        enter(folder, null);
        return;
      }
      List<Child> children = new ArrayList<>(unit.names.length);
      for (String name : unit.names) {
        Child child = stat(folder, name, nativeFolders);
        if (child != null) {
          children.add(child);
        }
      }
      frames.push(new Frame(children, null, folder));
    }

    /**
     * Reads a folder and walks it next; a folder that cannot be listed is an entry. {@code
     * linkedKey}: its key, when it is reached through a symlink (null otherwise).
     */
    private void enter(Path folder, Object linkedKey) {
      try {
        Frame frame = new Frame(read(folder, scope.naming, nativeFolders), linkedKey, folder);
        if (linkedKey == null || linkedAncestors.add(linkedKey)) {
          frames.push(frame);
        }
      } catch (NoSuchFileException e) {
        // deleted since its parent was read
      } catch (IOException e) {
        error(
            folder,
            FileListing.UNREADABLE,
            "cannot list folder " + folder + ": " + FileListing.describe(e));
      }
    }

    private void visit(Child child, boolean throughLink, String folderUri) {
      if (child.error != null) {
        error(
            child.path(),
            FileListing.UNREADABLE,
            "cannot read " + child.path() + ": " + FileListing.describe(child.error));
        return;
      }
      BasicFileAttributes attributes = child.attributes;
      if (attributes.isSymbolicLink()) {
        link(child.path());
      } else if (attributes.isDirectory()) {
        if (scope.recursive) {
          Object key = throughLink ? key(child.path(), attributes, nativeFolders) : null;
          if (key == null || !linkedAncestors.contains(key)) {
            enter(child.path(), key);
          }
        }
      } else if (scope.matchesAll() || scope.matches(child.path())) {
        file(child.uri(folderUri), null, child, attributes);
      }
    }

    /** A symlink: a file, a folder to walk, or a dangling link. */
    private void link(Path link) {
      BasicFileAttributes attributes;
      Path real;
      try {
        attributes = nativeFolders ? NativeFolders.stat(link, true) : null;
        if (attributes == null) {
          attributes = Files.readAttributes(link, BasicFileAttributes.class);
        }
        real = link.toRealPath();
      } catch (IOException e) {
        if (scope.matches(link)) {
          String cause =
              e instanceof NoSuchFileException
                  ? "which does not exist"
                  : "unreadable: " + FileListing.describe(e);
          error(
              link,
              FileListing.NOT_FOUND,
              "dangling symlink " + link + " -> " + linkTarget(link) + " (" + cause + ")");
        }
        return;
      }
      if (attributes.isDirectory()) {
        // A folder of the tree is listed by its real path; a loop back to a folder being
        // walked through symlinks ends here.
        Object key = key(real, attributes, nativeFolders);
        if (scope.recursive
            && !scope.listsRealPath(real, true)
            && !linkedAncestors.contains(key)) {
          enter(link, key);
        }
      } else if (scope.matches(link) && !scope.listsRealPath(real, false)) {
        file(link, attributes);
      }
    }

    /** A file reached through a symlink (listed under the link's path). */
    private void file(Path file, BasicFileAttributes attributes) {
      file(uri(file), file, null, attributes);
    }

    /**
     * An entry that is neither folder nor symlink, {@code uri} its path: {@code file}, or the
     * path of {@code child}, made only if a message needs it.
     */
    private void file(String uri, Path file, Child child, BasicFileAttributes attributes) {
      long millis = attributes.lastModifiedTime().toMillis();
      if (attributes.isRegularFile()) {
        // Spark's file scans leave out empty files.
        if (scope.naming == Naming.LIST_FILES || attributes.size() > 0) {
          pending = new FileListing.Entry(uri, millis, attributes.size(), null, null);
        }
      } else if (scope.naming == Naming.LIST_FILES) {
        Path path = file != null ? file : child.path();
        pending =
            new FileListing.Entry(
                uri,
                millis,
                null,
                FileListing.NOT_REGULAR,
                "not a regular file: " + path + " (" + kind(path) + ")");
      }
    }

    private void error(Path path, String reason, String message) {
      if (scope.naming == Naming.LIST_FILES) {
        pending = new FileListing.Entry(uri(path), null, null, reason, message);
      }
    }
  }

  /** The path as Spark's binaryFile source gives it: file: and the path, not encoded. */
  static String uri(Path path) {
    return "file:" + path;
  }

  /**
   * Device and inode; the path itself where the file system has no file keys. The JDK's key
   * and {@link NativeFolders.Key} are never equal, so a JDK key becomes the latter (one more
   * stat; only for a path java.nio alone can spell, when the walk reads folders natively).
   */
  private static Object key(Path path, BasicFileAttributes attributes, boolean nativeFolders) {
    Object key = attributes.fileKey();
    if (key == null) {
      return path.toAbsolutePath().normalize();
    }
    if (key instanceof NativeFolders.Key || !nativeFolders) {
      return key;
    }
    try {
      Map<String, Object> unix = Files.readAttributes(path, "unix:dev,ino");
      return new NativeFolders.Key((Long) unix.get("dev"), (Long) unix.get("ino"));
    } catch (IOException | RuntimeException e) {
      return key;
    }
  }

  static String linkTarget(Path link) {
    try {
      return Files.readSymbolicLink(link).toString();
    } catch (IOException | UnsupportedOperationException e) {
      return "?";
    }
  }

  private static String kind(Path path) {
    try {
      int mode = (Integer) Files.getAttribute(path, "unix:mode");
      switch (mode & 0170000) {
        case 0010000:
          return "named pipe";
        case 0140000:
          return "socket";
        case 0020000:
          return "character device";
        case 0060000:
          return "block device";
        default:
          return "special file";
      }
    } catch (IOException | UnsupportedOperationException | IllegalArgumentException e) {
      return "special file";
    }
  }
}
